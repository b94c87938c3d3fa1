package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/auth"
	"proxyusage/internal/rollup"
	"proxyusage/internal/workload"
)

// (8) Fairness: a victim tenant reads and batch-ingests while an attacker
// abuses the service, one attack at a time. Each attack runs against a
// fresh service process on the same database, so the service's VmHWM
// covers that attack alone.

// attack is one abuse scenario of (8).
type attack struct {
	id, name string
	// prepare, when set, readies the attack's data before its service
	// starts (an attacker's proxies, pending connections...).
	prepare func(ctx context.Context, f *fairness) error
	// start begins the attack against the running service (f.url) and
	// returns once it is in place; stop ends it and describes what the
	// attacker saw.
	start func(ctx context.Context, f *fairness) (stop func() string, err error)
}

// attacks are the scenarios of (8), run in turn after a baseline without
// any.
func (b *bench) attacks() []attack {
	return []attack{
		{id: "8a", name: "8 slow uploads declaring 10 MiB each", start: slowUploads},
		{id: "8b", name: fmt.Sprintf("%d concurrent 365-day reports of a user with many proxies and pending connections", reportAttackClients),
			prepare: prepareYearReports, start: yearReports},
		{id: "8c", name: fmt.Sprintf("%s idle keep-alive connections", count(b.opt.idleConns)), start: idleConnections},
	}
}

// fairness is the state shared by the victim and the attacks.
type fairness struct {
	b      *bench
	pool   *pgxpool.Pool
	dbURL  string
	url    string // the running service
	today  time.Time
	victim struct {
		user    string
		token   string
		proxies []string
	}
	client *http.Client // the victim's, kept alive
	probe  *http.Client // a new connection per request
	rng    *rand.Rand
}

func (f *fairness) token(sub string, roles ...string) (string, error) {
	return auth.Mint([]byte(secret), sub, roles, 24*time.Hour, "", "")
}

// fairnessPhase is (8).
func (b *bench) fairnessPhase(ctx context.Context) error {
	pool, dbURL, err := b.newDatabase(ctx, "bench_fairness")
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	f := &fairness{b: b, pool: pool, dbURL: dbURL, today: rollup.Day(now), rng: rand.New(rand.NewPCG(b.opt.seed, 7))}
	gen := workload.New(workload.Config{Seed: b.opt.seed + 7, Users: 4, Proxies: 40,
		Start: f.today.AddDate(0, 0, -30), End: f.today, Events: b.opt.fairnessEvents, Prefix: "f"})
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	step("(8) fairness: seeding the victim tenant's 30 days (%s events over %d proxies of %d users)", count(b.opt.fairnessEvents), 40, 4)
	if _, err := workload.Seed(ctx, pool, gen, 50_000, nil); err != nil {
		return err
	}
	if err := workload.PairAll(ctx, pool, 24*time.Hour, nil); err != nil {
		return err
	}
	if _, err := b.rollUp(ctx, pool); err != nil {
		return err
	}
	f.victim.user = gen.Users()[0]
	for _, p := range gen.Proxies() {
		if p.UserID == f.victim.user {
			f.victim.proxies = append(f.victim.proxies, p.ID)
		}
	}
	if f.victim.token, err = f.token(f.victim.user); err != nil {
		return err
	}

	for _, a := range append([]attack{{id: "8", name: "nothing (baseline)"}}, b.attacks()...) {
		if b.opt.attacks != "" && !slices.Contains(strings.Split(b.opt.attacks, ","), a.id) {
			continue
		}
		if err := f.run(ctx, a); err != nil {
			return fmt.Errorf("(%s) %s: %w", a.id, a.name, err)
		}
	}
	return nil
}

// run measures the victim while attack a is in place.
func (f *fairness) run(ctx context.Context, a attack) error {
	b := f.b
	if a.prepare != nil {
		if err := a.prepare(ctx, f); err != nil {
			return err
		}
	}
	svc, err := b.startService(ctx, f.dbURL, "fairness-"+a.id)
	if err != nil {
		return err
	}
	defer func() {
		_ = svc.stop()
		b.svc = nil
	}()
	f.url = svc.url
	f.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	f.probe = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer f.client.CloseIdleConnections()
	// Warm up: connections, caches, prepared statements.
	if st := f.victimLoad(ctx, 2*time.Second, a.id+"w"); st.failures() > 0 {
		return fmt.Errorf("victim failed before any attack: %s", st.firstErr)
	}

	step("(%s) victim tenant for %s while an attacker holds %s", a.id, b.opt.fairnessFor, a.name)
	rss := sampleRSS(svc.pid())
	m0 := b.scrape()
	stop := func() string { return "" }
	if a.start != nil {
		if stop, err = a.start(ctx, f); err != nil {
			rss.end()
			return err
		}
	}
	cpu0 := b.cpu() // the victim's window, the attack in place
	resetStatements(ctx, f.pool)
	prof := b.profileService("fairness-"+a.id, profileSeconds(b.opt.fairnessFor))
	st := f.victimLoad(ctx, b.opt.fairnessFor, a.id)
	held := b.scrape()
	cpuTop, perr := prof.wait()
	cpu1 := b.cpu()
	attacker := stop()
	peak := rss.end()
	_, hwm := memory(svc.pid())
	m1 := b.scrape()
	endProgress()

	r50, r99 := quantile(st.reads, 0.5), quantile(st.reads, 0.99)
	p99 := quantile(st.probes, 0.99)
	top := max(peak, hwm)
	b.add(result{a.id, "victim tenant (reads, batch ingest, /healthz) while an attacker holds " + a.name,
		fmt.Sprintf("reads p50 %s, **p99 %s** (%s, %d failed); batches of 1,000 events %d stored, %d failed; /healthz on a new connection p99 %s (%d failed); service RSS peak **%s** (VmHWM)",
			ms(r50), ms(r99), count(len(st.reads)), st.readFails, st.batches, st.batchFails, ms(p99), st.probeFails, mb(top)),
		"read p99 < 50 ms, 0 failed, RSS < 150 MB",
		mark(r99 < 50*time.Millisecond) + " p99, " + mark(st.failures() == 0) + " failures, " + mark(top < 150<<20) + " RSS"})

	d := func(k string) float64 { return m1[k] - m0[k] }
	statuses := map[string]float64{}
	for k := range m1 {
		if i := strings.Index(k, `status="`); strings.HasPrefix(k, "proxyusage_http_requests_total{") && i > 0 {
			if n := d(k); n > 0 {
				statuses[k[i+8:i+11]] += n
			}
		}
	}
	var codes []string
	for _, c := range []string{"200", "201", "408", "429", "499", "503"} {
		if statuses[c] > 0 {
			codes = append(codes, fmt.Sprintf("%s × %.0f", c, statuses[c]))
		}
	}
	ev := fmt.Sprintf("Victim (a user with 10 proxies): one client reading the 30 days before today (report by day, range of one proxy, alternately, back to back), one posting a batch of 1,000 events every second, one probing `/healthz` on a new connection every 100 ms, for %s.", b.opt.fairnessFor)
	if st.firstErr != "" {
		ev += " First victim failure: `" + st.firstErr + "`."
	}
	if attacker != "" {
		ev += " Attacker: " + attacker + "."
	}
	ev += fmt.Sprintf(" Service: connections open at the end of the attack %.0f, requests in flight %.0f; answers by status during it: %s; shed (503) %.0f.",
		held["proxyusage_http_open_connections"], held["proxyusage_http_inflight_requests"], strings.Join(codes, ", "), d("proxyusage_http_shed_total"))
	ev += fmt.Sprintf(" RSS: highest sampled VmRSS %s, VmHWM %s; at the end of the attack Go heap in use %s, goroutine stacks %s, %.0f goroutines; %.0f garbage collections during it. CPU: %s.",
		mb(peak), mb(hwm), mb(int64(held["go_memstats_heap_inuse_bytes"])), mb(int64(held["go_memstats_stack_inuse_bytes"])), held["go_goroutines"], d("go_gc_duration_seconds_count"), cpuSplit(cpu0, cpu1))
	ev += "\n\nServer time per statement during it (`pg_stat_statements`):\n\n" + topStatements(ctx, f.pool, 6)
	if perr == nil {
		ev += "\n\nService CPU profile during the attack (`go tool pprof -top`, " + b.opt.profDir + "/fairness-" + a.id + ".cpu.pprof):\n\n```\n" + cpuTop + "\n```\n"
	}
	b.addEvidence(fmt.Sprintf("(%s) fairness: %s", a.id, a.name), ev)
	return nil
}

// victimStats is what the victim saw.
type victimStats struct {
	mu                                sync.Mutex
	reads, probes                     []time.Duration
	readFails, batchFails, probeFails int
	batches                           int
	firstErr                          string
}

func (s *victimStats) fail(counter *int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*counter++
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
}

func (s *victimStats) failures() int { return s.readFails + s.batchFails + s.probeFails }

// victimLoad runs the victim's clients for d: reads back to back, a batch
// every second, a /healthz probe on a new connection every 100 ms.
func (f *fairness) victimLoad(ctx context.Context, d time.Duration, tag string) *victimStats {
	st := &victimStats{}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// The 30 complete days before today: the victim's own batches land
	// today, so each attack's reads cover the same rolled-up data and
	// differ only by what the attacker does.
	from := f.today.AddDate(0, 0, -30).Format(dateLayout)
	to := f.today.AddDate(0, 0, -1).Format(dateLayout)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // reads
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			path := "/proxy/usage/report?groupBy=day&startDate=" + from + "&endDate=" + to
			if i%2 == 1 {
				p := f.victim.proxies[i/2%len(f.victim.proxies)]
				path = "/proxy/usage/" + p + "/metrics?startDate=" + from + "&endDate=" + to
			}
			t := time.Now()
			if err := f.call(f.client, http.MethodGet, path, nil, http.StatusOK); err != nil {
				if ctx.Err() == nil {
					st.fail(&st.readFails, err)
				}
				continue
			}
			st.mu.Lock()
			st.reads = append(st.reads, time.Since(t))
			st.mu.Unlock()
		}
	}()
	go func() { // batch ingest
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for n := 0; ; n++ {
			// A batch that has started is finished: its outcome counts.
			if err := f.call(f.client, http.MethodPost, "/proxy/usage/events", f.victimBatch(fmt.Sprintf("%s-%d", tag, n)), http.StatusCreated); err != nil {
				st.fail(&st.batchFails, err)
			} else {
				st.mu.Lock()
				st.batches++
				st.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	go func() { // probes
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			t := time.Now()
			if err := f.call(f.probe, http.MethodGet, "/healthz", nil, http.StatusOK); err != nil {
				st.fail(&st.probeFails, err)
			} else {
				st.mu.Lock()
				st.probes = append(st.probes, time.Since(t))
				st.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	stop := f.b.ticker(func(el time.Duration) {
		st.mu.Lock()
		defer st.mu.Unlock()
		progress("%.0f s  reads %d (p99 so far %s)  batches %d  probes %d  failed %d",
			el.Seconds(), len(st.reads), ms(quantile(append([]time.Duration(nil), st.reads...), 0.99)), st.batches, len(st.probes), st.failures())
	})
	wg.Wait()
	stop()
	return st
}

// call sends one request as the victim and checks its status.
func (f *fairness) call(c *http.Client, method, path string, body []byte, want int) error {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	// No request context: a request the victim started is waited for.
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+f.victim.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, truncate(string(data), 200))
	}
	return nil
}

// victimBatch is 1,000 new events over the victim's proxies.
func (f *fairness) victimBatch(tag string) []byte {
	var b strings.Builder
	ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339Nano)
	b.WriteString(`{"events":[`)
	for i := range 1000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"proxyId":%q,"eventId":"victim-%s-%d","timestamp":%q,"eventType":"data_transfer","eventData":{"bytesSent":%d,"bytesReceived":%d,"latencyMs":%d}}`,
			f.victim.proxies[i%len(f.victim.proxies)], tag, i, ts, 1000+i, 500+i, 5+i%40)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func (f *fairness) hostPort() string {
	u, _ := url.Parse(f.url)
	return u.Host
}

// slowUploads is (8a): 8 uploads declare 10 MiB each and trickle one event
// a second; when the service ends one, the attacker starts it again.
func slowUploads(ctx context.Context, f *fairness) (func() string, error) {
	const uploads = 8
	tok, err := f.token("mallory")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	answers := map[string]int{}
	started := make(chan struct{}, uploads)
	var wg sync.WaitGroup
	for range uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for ctx.Err() == nil {
				answer := f.slowUpload(ctx, tok, func() {
					if first {
						first = false
						started <- struct{}{}
					}
				})
				if ctx.Err() == nil {
					mu.Lock()
					answers[answer]++
					mu.Unlock()
				}
			}
		}()
	}
	for range uploads {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			cancel()
			wg.Wait()
			return nil, errors.New("slow uploads did not start")
		}
	}
	return func() string {
		cancel()
		wg.Wait()
		var ended []string
		for a, n := range answers {
			ended = append(ended, fmt.Sprintf("%s × %d", a, n))
		}
		if len(ended) == 0 {
			ended = []string{"none"}
		}
		return fmt.Sprintf("%d uploads of `POST /proxy/usage/events` declaring `Content-Length: 10485760`, sending one event (about 40 bytes) a second, each restarted when the service ended it; ended by the service during the attack: %s",
			uploads, strings.Join(ended, ", "))
	}, nil
}

// slowUpload runs one trickling upload until the service answers or
// closes the connection (returning what it did) or ctx ends.
func (f *fairness) slowUpload(ctx context.Context, tok string, started func()) string {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", f.hostPort())
	if err != nil {
		time.Sleep(100 * time.Millisecond)
		return "dial error"
	}
	defer c.Close()
	head := fmt.Sprintf("POST /proxy/usage/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"events\":[",
		f.hostPort(), tok, 10<<20)
	if _, err := io.WriteString(c, head); err != nil {
		return "write error"
	}
	started()
	answered := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- "connection closed"
			return
		}
		resp.Body.Close()
		answered <- fmt.Sprint(resp.StatusCode)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case a := <-answered:
			return a
		case <-tick.C:
			_, _ = io.WriteString(c, `{"proxyId":"m1","eventType":"error"},`)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// raiseOpenFileLimit lifts this process's soft open-file limit to the
// hard one: attack (8c) holds thousands of client connections.
func raiseOpenFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func openFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}
