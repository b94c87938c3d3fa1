package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"proxyusage/internal/alert"
	"proxyusage/internal/auth"
	"proxyusage/internal/ingest"
	"proxyusage/internal/limit"
	"proxyusage/internal/rollup"
	"proxyusage/internal/workload"
)

// Settings of (7), the edge's access question and alert delivery. They are
// flags of their own so the phase stays in this file.
var (
	accessSeedEvents  = flag.Int("access-events", 1_000_000, "month-to-date events seeded before (7)")
	accessFor         = flag.Duration("access-duration", 20*time.Second, "access requests under ingest, run time (7)")
	accessClients     = flag.Int("access-clients", 8, "concurrent edge clients asking for access (7)")
	accessRate        = flag.Int("access-rate", 100, "access requests/s the edge clients send together under ingest, paced; 0: as fast as they can (7)")
	accessIngestRate  = flag.Int("access-ingest-rate", 10_000, "batch ingest events/s running during the access requests (7)")
	accessIdleQueries = flag.Int("access-idle-requests", 2_000, "access requests with no ingest running, the same run's baseline (7)")
	accessAlerts      = flag.Int("access-alerts", 6, "limit crossings timed from acknowledgement to webhook arrival (7)")
)

// accessSettings applies -quick to (7)'s own flags.
func (b *bench) accessSettings() (events int, runFor time.Duration, idle, alerts int) {
	events, runFor, idle, alerts = *accessSeedEvents, *accessFor, *accessIdleQueries, *accessAlerts
	if !b.opt.quick {
		return
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["access-events"] {
		events = 100_000
	}
	if !set["access-duration"] {
		runFor = 6 * time.Second
	}
	if !set["access-idle-requests"] {
		idle = 500
	}
	if !set["access-alerts"] {
		alerts = 3
	}
	return
}

// Limit classes of the generated users, by index modulo 5.
const (
	classNone     = iota // no limit
	classHardLow         // hard limit at twice the month's usage so far
	classHardNear        // hard limit just above it: crossed during the run
	classHardOver        // hard limit below it: refused
	classSoftOver        // soft limit below it: allowed
)

var classNames = []string{"no limit", "hard, under", "hard, near", "hard, over", "soft, over"}

// accessPhase is (7): GET /proxy/usage/access/{proxyId} over the 1,000
// proxies of users with and without monthly limits (some near or past a
// hard one), alone and under concurrent batch ingest, every answer exact;
// then the time from the acknowledgement of a limit-crossing batch to the
// arrival of its signed webhook at a receiver on loopback.
func (b *bench) accessPhase(ctx context.Context) error {
	seedEvents, runFor, idleRequests, alerts := b.accessSettings()
	pool, dbURL, err := b.newDatabase(ctx, "bench_access")
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	month := limit.Month(now)
	gen := workload.New(workload.Config{Seed: b.opt.seed + 11, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: month, End: now.Add(-time.Minute), Events: seedEvents, Prefix: "a"})
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	step("(7) seeding %s month-to-date events (%d proxies of %d users) and rolling them up", count(seedEvents), b.opt.proxies, b.opt.users)
	if _, err := workload.Seed(ctx, pool, gen, 50_000, nil); err != nil {
		return err
	}
	if _, err := b.rollUp(ctx, pool); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		return err
	}
	// Users whose limit the alert measurement crosses: a proxy each, no
	// other traffic.
	alertUsers := make([]string, alerts)
	for i := range alertUsers {
		alertUsers[i] = fmt.Sprintf("alert-%02d", i)
		if _, err := pool.Exec(ctx, `WITH u AS (INSERT INTO users (id) VALUES ($1) RETURNING id)
			INSERT INTO proxies (id, user_id, name) SELECT 'px-' || id, id, 'bench alert' FROM u`, alertUsers[i]); err != nil {
			return err
		}
	}

	receiver, err := newWebhookReceiver()
	if err != nil {
		return err
	}
	defer receiver.close()
	svc, err := b.startService(ctx, dbURL, "access", "WEBHOOK_ALLOW_PRIVATE=true")
	if err != nil {
		return err
	}
	a := &access{b: b, pool: pool, month: month, rng: rand.New(rand.NewPCG(b.opt.seed, 7)), limits: map[string]*limit.Limit{}}
	for _, p := range gen.Proxies() {
		a.proxies = append(a.proxies, p.ID)
		a.owner = append(a.owner, p.UserID)
	}
	if a.admin, err = auth.Mint([]byte(secret), "bench-admin", []string{auth.RoleAdmin}, 24*time.Hour, "", ""); err != nil {
		return err
	}
	if a.edge, err = auth.Mint([]byte(secret), "bench-edge", []string{auth.RoleService}, 24*time.Hour, "", ""); err != nil {
		return err
	}
	classes, err := a.setLimits(ctx, gen.Users())
	if err != nil {
		return err
	}
	fmt.Printf("  limits: %s\n", classes)

	// Warm-up: connections, prepared statements, caches.
	if _, err := a.run(ctx, 2, 0, 400, 0); err != nil {
		return err
	}
	step("(7) access: %s sequential requests with no ingest running", count(idleRequests))
	idle, err := a.run(ctx, 1, 0, idleRequests, 0)
	if err != nil {
		return err
	}
	idle50, idle99 := quantile(idle, 0.5), quantile(idle, 0.99)
	fmt.Printf("  p50 %s, p99 %s\n", ms(idle50), ms(idle99))

	step("(7) access: %d clients, %s requests/s in all, for %s while batch ingest runs at %s events/s", *accessClients, paced(*accessRate), runFor, rate(float64(*accessIngestRate)))
	ing, err := a.startIngest(ctx, gen, runFor)
	if err != nil {
		return err
	}
	resetStatements(ctx, pool)
	m0 := b.scrape()
	prof := b.profileService("access", profileSeconds(runFor))
	start := b.cpu()
	plan := make(chan string, 1)
	go func() {
		// Halfway through: how the month's exact bytes of one user are read
		// while the invalidation log holds the flushes not yet rolled up.
		time.Sleep(runFor / 2)
		plan <- a.explainUsed(ctx)
	}()
	backlog := sampleBacklog(ctx, pool, runFor)
	busy, runErr := a.run(ctx, *accessClients, runFor, 0, *accessRate)
	end := b.cpu()
	ingested, ingErr := ing.wait()
	if err := errors.Join(runErr, ingErr); err != nil {
		return err
	}
	stmts := topStatements(ctx, pool, 6)
	top, perr := prof.wait()
	p50, p99 := quantile(busy, 0.5), quantile(busy, 0.99)
	ingestRate := float64(ingested) / runFor.Seconds()
	fmt.Printf("  %s requests, p50 %s, p99 %s; %s events ingested meanwhile\n", count(len(busy)), ms(p50), ms(p99), count(int(ingested)))

	// Every answer is exact: compare with the month's raw events.
	checked, err := a.verify(ctx, 60)
	if err != nil {
		return err
	}

	b.add(result{"7a", fmt.Sprintf("access (GET /proxy/usage/access/{proxyId}), %s proxies, %d edge clients sending %s requests/s, under batch ingest (achieved %s events/s)", count(len(a.proxies)), *accessClients, paced(*accessRate), rate(ingestRate)),
		fmt.Sprintf("p50 %s, **p99 %s** (%s requests, %.0f/s); same run, one client, no ingest: p50 %s, p99 %s (p99 ×%.1f under ingest); %s",
			ms(p50), ms(p99), count(len(busy)), float64(len(busy))/runFor.Seconds(), ms(idle50), ms(idle99), float64(p99)/float64(max(idle99, 1)), <-backlog) +
			fmt.Sprintf("; ingest: %d batch requests by 2 clients, %s each on average, %d answers 503 retried", ing.requests.Load(),
				ms(time.Duration(ing.busy.Load()/max(ing.requests.Load(), 1))), ing.retries.Load()),
		"p99 < 5 ms", yes(p99 < 5*time.Millisecond)})

	step("(7) alerts: %d limit crossings, acknowledgement → signed webhook on loopback", alerts)
	delays, err := a.alerts(ctx, alertUsers, receiver)
	if err != nil {
		return err
	}
	var lines []string
	for i, d := range delays {
		lines = append(lines, fmt.Sprintf("%s: %.2f s", alertUsers[i], d.Seconds()))
	}
	d50, dmax := quantile(delays, 0.5), quantile(delays, 1)
	b.add(result{"7b", fmt.Sprintf("alert delay: batch crossing a hard limit acknowledged → signed webhook received on loopback (ALERT_INTERVAL %s), %d crossings", alertInterval(), len(delays)),
		fmt.Sprintf("median %.2f s, max %.2f s", d50.Seconds(), dmax.Seconds()),
		"within 60 s", yes(dmax < 60*time.Second)})

	ev := fmt.Sprintf("Dataset: %s month-to-date events (%s to now) over %s proxies of %d users, rolled up before the run; limits set through `PUT /admin/users/{userId}` relative to each user's usage so far: %s. "+
		"The edge clients ask for a random proxy each, on keep-alive connections, paced together at %s requests/s (a latency counts from the request's due time), while batch ingest (1,000 events per request, timestamps of the last minutes) runs at a paced %s events/s over the same proxies, so the current day of most users stays in the invalidation log and is read from raw events.",
		count(seedEvents), month.Format(dateLayout), count(len(a.proxies)), b.opt.users, classes, paced(*accessRate), rate(float64(*accessIngestRate)))
	ev += fmt.Sprintf(" Afterwards %d access answers were compared with the month's raw events (`usedGB` to the byte, `allowed` and `reason` from the limit): all equal.", checked)
	ev += "\n\nCPU under ingest: " + cpuSplit(start, end) + "." + serverSideGet(m0, b.scrape(), "/proxy/usage/access/{proxyId}")
	ev += "\n\nServer time per statement under ingest (`pg_stat_statements`):\n\n" + stmts
	if perr == nil {
		ev += "\nService CPU profile under ingest (`go tool pprof -top`, " + b.opt.profDir + "/access.cpu.pprof):\n\n```\n" + top + "\n```\n"
	}
	ev += "\n<details><summary>EXPLAIN (ANALYZE, BUFFERS) of a user's exact month-to-date bytes, halfway through the run under ingest (the statement of limit.Service.Used, the core of the access statement)</summary>\n\n```\n" + <-plan + "\n```\n</details>\n"
	ev += "\nAlert delays (a batch crossing each user's 1 GB hard limit at 100 %, posted at a random moment; the receiver checks the `X-ProxyUsage-Signature` HMAC with the secret `PUT /proxy/usage/webhook` returned, and the very next access answer after the acknowledgement already refuses): " +
		strings.Join(lines, ", ") + "."
	b.addEvidence("(7) access and alerts", ev)

	step("stopping the service")
	err = svc.stop()
	b.svc = nil
	return err
}

func paced(perSecond int) string {
	if perSecond <= 0 {
		return "as many"
	}
	return count(perSecond)
}

// alertInterval is the service's evaluation interval as the bench runs it.
func alertInterval() string {
	if v := strings.TrimSpace(os.Getenv("ALERT_INTERVAL")); v != "" {
		return v
	}
	return "10s (default)"
}

// alertEvery is alertInterval as a duration.
func alertEvery() time.Duration {
	if d, err := time.ParseDuration(strings.TrimSpace(os.Getenv("ALERT_INTERVAL"))); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

type access struct {
	b       *bench
	pool    *pgxpool.Pool
	month   time.Time
	rng     *rand.Rand
	mu      sync.Mutex
	proxies []string
	owner   []string
	limits  map[string]*limit.Limit // user → own limit
	admin   string
	edge    string
}

// usedBytes reads users' month usage from raw events.
func (a *access) usedBytes(ctx context.Context, users []string) (map[string]*big.Int, error) {
	rows, err := a.pool.Query(ctx, `
		SELECT p.user_id, coalesce(sum(e.bytes_sent + e.bytes_received), 0)::text
		  FROM proxies p LEFT JOIN usage_events e ON e.proxy_id = p.id AND e.time >= $2 AND e.time < $3
		 WHERE p.user_id = ANY($1) GROUP BY 1`, pgx.QueryExecModeExec, users, a.month, a.month.AddDate(0, 1, 0))
	if err != nil {
		return nil, err
	}
	out := map[string]*big.Int{}
	var u, s string
	_, err = pgx.ForEachRow(rows, []any{&u, &s}, func() error {
		n, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return fmt.Errorf("bad sum %q", s)
		}
		out[u] = n
		return nil
	})
	return out, err
}

// setLimits gives each user a limit of its class through the admin API.
func (a *access) setLimits(ctx context.Context, users []string) (string, error) {
	used, err := a.usedBytes(ctx, users)
	if err != nil {
		return "", err
	}
	perClass := make([]int, len(classNames))
	for i, u := range users {
		class := i % len(classNames)
		perClass[class]++
		gb := limit.GB(used[u])
		var l *limit.Limit
		switch class {
		case classHardLow:
			l = &limit.Limit{MonthlyGB: gb.Mul(decimal.NewFromInt(2)), Enforcement: limit.Hard}
		case classHardNear:
			l = &limit.Limit{MonthlyGB: gb.Mul(decimal.RequireFromString("1.0005")), Enforcement: limit.Hard}
		case classHardOver:
			l = &limit.Limit{MonthlyGB: gb.Mul(decimal.RequireFromString("0.8")), Enforcement: limit.Hard}
		case classSoftOver:
			l = &limit.Limit{MonthlyGB: gb.Mul(decimal.RequireFromString("0.8")), Enforcement: limit.Soft}
		}
		if l == nil {
			continue
		}
		l.MonthlyGB = l.MonthlyGB.Truncate(limit.MaxGBDecimals)
		if !l.MonthlyGB.IsPositive() {
			l.MonthlyGB = decimal.RequireFromString("0.001")
		}
		l.AlertPercents = []int{80, 100}
		if err := a.putLimit(ctx, u, l); err != nil {
			return "", err
		}
	}
	var parts []string
	for c, n := range perClass {
		parts = append(parts, fmt.Sprintf("%d users %s", n, classNames[c]))
	}
	return strings.Join(parts, ", "), nil
}

func (a *access) putLimit(ctx context.Context, userID string, l *limit.Limit) error {
	body, err := json.Marshal(map[string]any{"limits": l.JSON()})
	if err != nil {
		return err
	}
	if _, err := a.do(ctx, http.MethodPut, "/admin/users/"+userID, a.admin, body, http.StatusOK); err != nil {
		return err
	}
	a.mu.Lock()
	a.limits[userID] = l
	a.mu.Unlock()
	return nil
}

func (a *access) do(ctx context.Context, method, path, token string, body []byte, want int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.b.svc.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.b.client.Do(req)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return data, nil
}

func (a *access) get(ctx context.Context, proxyID string) (limit.Access, time.Duration, error) {
	t := time.Now()
	data, err := a.do(ctx, http.MethodGet, "/proxy/usage/access/"+proxyID, a.edge, nil, http.StatusOK)
	d := time.Since(t)
	if err != nil {
		return limit.Access{}, 0, err
	}
	var out limit.Access
	return out, d, json.Unmarshal(data, &out)
}

// run asks for random proxies' access from clients concurrent clients,
// for runFor or n requests in all, at most perSecond requests/s together
// (0: no pacing), and returns the latencies. Paced, a latency counts from
// the request's due time, so a client late to send is counted too.
func (a *access) run(ctx context.Context, clients int, runFor time.Duration, n, perSecond int) ([]time.Duration, error) {
	deadline := time.Now().Add(runFor)
	var next atomic.Int64
	t0 := time.Now()
	lat := make([][]time.Duration, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		rng := rand.New(rand.NewPCG(a.b.opt.seed+uint64(c), uint64(n)))
		wg.Go(func() {
			for ctx.Err() == nil {
				if runFor > 0 && time.Now().After(deadline) {
					return
				}
				k := int(next.Add(1))
				if n > 0 && k > n {
					return
				}
				var due time.Time
				if perSecond > 0 {
					due = t0.Add(time.Duration(k-1) * time.Second / time.Duration(perSecond))
					if runFor > 0 && due.After(deadline) {
						return
					}
					time.Sleep(time.Until(due))
				}
				_, d, err := a.get(ctx, a.proxies[rng.IntN(len(a.proxies))])
				if err != nil {
					errs[c] = err
					return
				}
				if !due.IsZero() {
					d = time.Since(due)
				}
				lat[c] = append(lat[c], d)
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, errors.Join(append(errs, ctx.Err())...)
}

// ingestRun is batch ingest paced at a rate in the background.
type ingestRun struct {
	done     chan struct{}
	ingested atomic.Int64
	retries  atomic.Int64 // answers 503, retried
	requests atomic.Int64
	busy     atomic.Int64 // nanoseconds spent in requests
	err      error
}

func (r *ingestRun) wait() (int64, error) {
	<-r.done
	return r.ingested.Load(), r.err
}

// startIngest posts batches of fresh events of the generator's proxies at
// -access-ingest-rate for runFor, from two clients.
func (a *access) startIngest(ctx context.Context, gen *workload.Generator, runFor time.Duration) (*ingestRun, error) {
	const batch = 1000
	now := time.Now().UTC()
	total := int(float64(*accessIngestRate)*runFor.Seconds()) + batch
	// The generator drops the events of connections that would end after
	// End (most of a 5-minute span's): ask for more, keep what is needed.
	live := workload.New(workload.Config{Seed: a.b.opt.seed + 12, Users: a.b.opt.users, Proxies: a.b.opt.proxies,
		Start: now.Add(-5 * time.Minute), End: now, Events: 4 * total, Prefix: "al"})
	var bodies [][]byte
	for len(bodies)*batch < total {
		evs := live.Next(nil, batch)
		if len(evs) == 0 {
			break
		}
		bodies = append(bodies, workload.AppendBatch(nil, evs))
	}
	r := &ingestRun{done: make(chan struct{})}
	interval := time.Duration(float64(time.Second) * batch / float64(max(1, *accessIngestRate)))
	work := make(chan []byte, 4)
	go func() {
		defer close(work)
		t := time.NewTicker(interval)
		defer t.Stop()
		deadline := time.Now().Add(runFor)
		for _, body := range bodies {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if time.Now().After(deadline) {
				return
			}
			work <- body
		}
	}()
	var wg sync.WaitGroup
	var once sync.Once
	for range 2 {
		wg.Go(func() {
			l, err := newLeanConn(a.b.svc.url)
			if err != nil {
				once.Do(func() { r.err = err })
				return
			}
			defer l.close()
			for body := range work {
				start := time.Now()
				ans, err := post(l, "/proxy/usage/events", a.edge, body, http.StatusCreated, &r.retries)
				r.busy.Add(int64(time.Since(start)))
				r.requests.Add(1)
				if err != nil {
					once.Do(func() { r.err = err })
					continue
				}
				r.ingested.Add(int64(ans.Accepted + ans.Duplicates))
			}
		})
	}
	go func() {
		wg.Wait()
		close(r.done)
	}()
	return r, nil
}

// verify compares n random proxies' access answers with raw events.
func (a *access) verify(ctx context.Context, n int) (int, error) {
	for range n {
		i := a.rng.IntN(len(a.proxies))
		got, _, err := a.get(ctx, a.proxies[i])
		if err != nil {
			return 0, err
		}
		used, err := a.usedBytes(ctx, []string{a.owner[i]})
		if err != nil {
			return 0, err
		}
		if err := a.check(got, a.owner[i], used[a.owner[i]]); err != nil {
			return 0, fmt.Errorf("access of %s: %w", a.proxies[i], err)
		}
	}
	return n, nil
}

func (a *access) check(got limit.Access, userID string, used *big.Int) error {
	if got.UserID != userID {
		return fmt.Errorf("userId %q, want %q", got.UserID, userID)
	}
	if want := limit.UsedString(used); got.UsedGB != want {
		return fmt.Errorf("usedGB %s, raw events %s", got.UsedGB, want)
	}
	a.mu.Lock()
	l := a.limits[userID]
	a.mu.Unlock()
	allowed, reason := true, limit.ReasonOK
	if l != nil && l.Enforcement == limit.Hard && l.Reached(used, 100) {
		allowed, reason = false, limit.ReasonExceeded
	}
	if got.Allowed != allowed || got.Reason != reason {
		return fmt.Errorf("allowed %v (%s), want %v (%s) at %s GB of %v", got.Allowed, got.Reason, allowed, reason, got.UsedGB, l)
	}
	return nil
}

// alerts crosses each user's limit with one batch and times the webhook.
func (a *access) alerts(ctx context.Context, users []string, rcv *webhookReceiver) ([]time.Duration, error) {
	var out []time.Duration
	for _, u := range users {
		tok, err := auth.Mint([]byte(secret), u, nil, time.Hour, "", "")
		if err != nil {
			return nil, err
		}
		body, _ := json.Marshal(map[string]string{"url": rcv.url + "/" + u})
		data, err := a.do(ctx, http.MethodPut, "/proxy/usage/webhook", tok, body, http.StatusOK)
		if err != nil {
			return nil, err
		}
		var hook struct{ Secret string }
		if err := json.Unmarshal(data, &hook); err != nil {
			return nil, err
		}
		rcv.setSecret(u, hook.Secret)
		if err := a.putLimit(ctx, u, &limit.Limit{MonthlyGB: decimal.NewFromInt(1), Enforcement: limit.Hard, AlertPercents: []int{100}}); err != nil {
			return nil, err
		}
		// A random moment relative to the evaluator's ticks (each crossing
		// starts right after the previous alert arrived, just after a tick).
		time.Sleep(time.Duration(a.rng.Int64N(int64(alertEvery()))))
		proxyID := "px-" + u
		evs := make([]ingest.Event, 4)
		for k := range evs {
			evs[k] = ingest.Event{ProxyID: proxyID, Type: ingest.DataTransfer, EventID: fmt.Sprintf("%s-%d", u, k),
				Time: time.Now().UTC().Add(-time.Second), ConnectionID: "c-" + u, BytesSent: 200_000_000, BytesReceived: 50_000_000}
		}
		if _, err := a.do(ctx, http.MethodPost, "/proxy/usage/events", a.edge, workload.AppendBatch(nil, evs), http.StatusCreated); err != nil {
			return nil, err
		}
		acked := time.Now()
		// Read-your-writes: the very next answer refuses.
		got, _, err := a.get(ctx, proxyID)
		if err != nil {
			return nil, err
		}
		if err := a.check(got, u, big.NewInt(1_000_000_000)); err != nil {
			return nil, fmt.Errorf("access right after the crossing batch: %w", err)
		}
		select {
		case at := <-rcv.arrived(u):
			out = append(out, at.Sub(acked))
			fmt.Printf("  %s: %.2f s\n", u, at.Sub(acked).Seconds())
		case err := <-rcv.errs:
			return nil, err
		case <-time.After(90 * time.Second):
			return nil, fmt.Errorf("no webhook for %s within 90 s", u)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// webhookReceiver is a customer's endpoint on loopback: it verifies each
// delivery's signature as a receiver would and notes when the first
// delivery of each alert arrived.
type webhookReceiver struct {
	srv  *http.Server
	url  string
	mu   sync.Mutex
	keys map[string]string
	seen map[string]bool
	wait map[string]chan time.Time
	errs chan error
}

func newWebhookReceiver() (*webhookReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &webhookReceiver{url: "http://" + ln.Addr().String(), keys: map[string]string{}, seen: map[string]bool{},
		wait: map[string]chan time.Time{}, errs: make(chan error, 16)}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *webhookReceiver) close() { _ = r.srv.Close() }

func (r *webhookReceiver) setSecret(user, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[user] = key
}

func (r *webhookReceiver) arrived(user string) chan time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wait[user] == nil {
		r.wait[user] = make(chan time.Time, 1)
	}
	return r.wait[user]
}

func (r *webhookReceiver) fail(err error) {
	select {
	case r.errs <- err:
	default:
	}
}

func (r *webhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	user := strings.TrimPrefix(req.URL.Path, "/")
	r.mu.Lock()
	key := r.keys[user]
	r.mu.Unlock()
	if err := verifySignature(key, req.Header.Get(alert.SignatureHeader), body, at); err != nil {
		r.fail(fmt.Errorf("webhook for %s: %w", user, err))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p alert.Payload
	if err := json.Unmarshal(body, &p); err != nil || p.UserID != user || p.Type != alert.EventType || p.ThresholdPercent != 100 {
		r.fail(fmt.Errorf("webhook for %s: unexpected payload %s", user, body))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
	r.mu.Lock()
	first := !r.seen[p.ID]
	r.seen[p.ID] = true
	r.mu.Unlock()
	if first {
		select {
		case r.arrived(user) <- at:
		default:
		}
	}
}

// verifySignature checks "t=<unix>,v1=<hex HMAC-SHA256(key, t.body)>" and
// that t is within five minutes of now, as the docs tell receivers to.
func verifySignature(key, header string, body []byte, now time.Time) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || key == "" {
		return fmt.Errorf("bad signature header %q", header)
	}
	if d := now.Sub(time.Unix(t, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("signature timestamp %d too far from now", t)
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return errors.New("signature does not match")
	}
	return nil
}

// serverSideGet is the service's own timing of a GET route between two
// scrapes.
func serverSideGet(a, z map[string]float64, route string) string {
	key := `{method="GET",route="` + route + `"}`
	n := z["proxyusage_http_request_duration_seconds_count"+key] - a["proxyusage_http_request_duration_seconds_count"+key]
	if n <= 0 {
		return ""
	}
	sum := z["proxyusage_http_request_duration_seconds_sum"+key] - a["proxyusage_http_request_duration_seconds_sum"+key]
	within := func(le string) float64 {
		k := "proxyusage_http_request_duration_seconds_bucket" + key[:len(key)-1] + `,le="` + le + `"}`
		return 100 * (z[k] - a[k]) / n
	}
	// Where the client's tail is: inside the service's handling, or
	// before it (accept, scheduling) and after it.
	return fmt.Sprintf(" Server side: the service handled %.0f access requests in %.2f ms on average (its own timer), %.1f %% of them within 5 ms, %.1f %% within 10 ms, %.1f %% within 25 ms.",
		n, 1000*sum/n, within("0.005"), within("0.01"), within("0.025"))
}

// sampleBacklog samples the rollup logs every second for runFor and
// sends what it saw: the access answer reads the pending deltas of the
// owner's proxies, so its cost follows how many wait.
func sampleBacklog(ctx context.Context, pool *pgxpool.Pool, runFor time.Duration) <-chan string {
	out := make(chan string, 1)
	go func() {
		var deltas, conns, maxDeltas, maxConns int
		var age, maxAge float64
		var sum, n int
		deadline := time.Now().Add(runFor)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			err := pool.QueryRow(ctx, `
				SELECT (SELECT count(*) FROM usage_rollup_deltas), (SELECT count(*) FROM usage_connection_invalidations),
				       coalesce(extract(epoch FROM now() - (SELECT min(logged_at) FROM usage_rollup_deltas)), 0)::float8`).Scan(&deltas, &conns, &age)
			if err == nil {
				maxDeltas, maxConns, maxAge = max(maxDeltas, deltas), max(maxConns, conns), max(maxAge, age)
				sum, n = sum+deltas, n+1
			}
			time.Sleep(time.Second)
		}
		out <- fmt.Sprintf("rollup logs sampled each second meanwhile: pending delta rows mean %d, max %d (oldest %.1f s at most), pending connection rows max %d",
			sum/max(n, 1), maxDeltas, maxAge, maxConns)
	}()
	return out
}

// explainUsed returns the plan of limit.Service.Used's statement for the
// first user's proxies and the month.
func (a *access) explainUsed(ctx context.Context) string {
	reader, err := rollup.NewReader(ctx, a.pool, a.b.backend, 24*time.Hour)
	if err != nil {
		return err.Error()
	}
	ctes := reader.BytesCTEs()
	var proxies []string
	for i, p := range a.proxies {
		if a.owner[i] == a.owner[0] {
			proxies = append(proxies, p)
		}
	}
	var pending int
	_ = a.pool.QueryRow(ctx, `SELECT count(*) FROM usage_rollup_deltas`).Scan(&pending)
	plan, err := explain(ctx, a.pool, limit.UsedSQL(ctes), proxies, a.month, limit.MonthEnd(a.month))
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("(%d rows in usage_rollup_deltas)\n%s", pending, plan)
}
