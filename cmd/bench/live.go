package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/workload"
)

// (12) Rollups that keep up while ingest never stops. On each backend, in
// a fresh database with one service process: the maximum batch ingest
// rate is measured briefly; once the worker has absorbed that burst,
// ingest runs paced at half of it for -live-duration, then at full rate
// for -live-full-duration. Throughout, readers sample the usage endpoints
// of random users, and every liveRow the rate, the rollup lag and pending
// work (from /metrics) and each endpoint's read p50/p99 are recorded.

// liveRow is how often a row of the live table is recorded.
const liveRow = 10 * time.Second

// liveDrainLimit bounds the wait for the worker to absorb a burst.
const liveDrainLimit = 10 * time.Minute

// liveEndpoint is one read the live readers sample.
type liveEndpoint struct {
	name string
	path func(user string, proxies []string, rng *rand.Rand) string
}

func liveEndpoints(today time.Time) []liveEndpoint {
	day := func(t time.Time) string { return t.Format(dateLayout) }
	last30 := day(today.AddDate(0, 0, -29))
	monthStart := day(time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC))
	return []liveEndpoint{
		{"metrics-range 30 d", func(_ string, proxies []string, rng *rand.Rand) string {
			return "/proxy/usage/" + proxies[rng.IntN(len(proxies))] + "/metrics?startDate=" + last30 + "&endDate=" + day(today)
		}},
		{"report 3 d by proxy", func(string, []string, *rand.Rand) string {
			return "/proxy/usage/report?groupBy=proxy&startDate=" + day(today.AddDate(0, 0, -2)) + "&endDate=" + day(today)
		}},
		{"aggregation 30 d", func(string, []string, *rand.Rand) string {
			return "/proxy/usage/aggregation?periodStart=" + last30 + "&periodEnd=" + day(today)
		}},
		{"billing month to date", func(string, []string, *rand.Rand) string {
			return "/proxy/usage/billing?periodStart=" + monthStart + "&periodEnd=" + day(today)
		}},
	}
}

// readWindow is one endpoint's reads in one row.
type readWindow struct {
	lat   []time.Duration
	fails int
}

type liveSample struct {
	at          time.Duration
	rate        float64
	lag         float64
	lagOK       bool
	pending     float64
	pendingOK   bool
	sinceRun    float64 // seconds since the worker's last successful run
	sinceRunOK  bool
	p50, p99    []time.Duration // per endpoint
	reads, fail []int
}

// live is the state of (12) on one backend.
type live struct {
	b         *bench
	be        database.Backend
	url       string
	tok       string
	tpl       *templates
	endpoints []liveEndpoint
	users     []string
	tokens    map[string]string
	owned     map[string][]string
	stream    streamRun
}

func (b *bench) live(ctx context.Context, be database.Backend) error {
	id := func(letter string) string { return "12" + letter + "-" + short(be) }
	pool, dbURL, _, err := b.newDatabaseOn(ctx, "bench_live_"+string(be), string(be))
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	gen := streamGenerator(b.opt.seed+17, now, 48*time.Hour, 1)
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	l := &live{b: b, be: be, tokens: map[string]string{}, owned: map[string][]string{},
		endpoints: liveEndpoints(now.Truncate(24 * time.Hour))}
	for _, p := range gen.Proxies() {
		l.owned[p.UserID] = append(l.owned[p.UserID], p.ID)
	}
	for _, u := range gen.Users() {
		if l.tokens[u], err = auth.Mint([]byte(secret), u, nil, 24*time.Hour, "", ""); err != nil {
			return err
		}
		l.users = append(l.users, u)
	}
	if l.tok, err = serviceToken(); err != nil {
		return err
	}
	step("(12) %s: encoding %d template batches of %d events (100 proxies of 10 users, last 48 h)", be, templateBodies, b.opt.batchSize)
	l.tpl = newTemplates(b.opt.seed+17, now, 48*time.Hour, templateBodies, b.opt.batchSize)
	svc, err := b.startService(ctx, dbURL, "live-"+string(be), "BACKEND="+string(be))
	if err != nil {
		return err
	}
	defer func() {
		_ = svc.stop()
		b.svc = nil
	}()
	l.url = svc.url

	clients := b.opt.sustainedClients
	step("(12) %s: maximum batch ingest rate, %d clients, for %s", be, clients, b.opt.liveMaxFor)
	t0 := time.Now()
	n0 := l.stream.accepted.Load()
	stop := b.ticker(func(el time.Duration) {
		progress("%.0f s  %s events/s", el.Seconds(), rate(float64(l.stream.accepted.Load()-n0)/el.Seconds()))
	})
	err = l.stream.run(ctx, l.url, l.tok, l.tpl, clients, b.opt.liveMaxFor, 0, b.opt.seed+17)
	stop()
	endProgress()
	if err != nil {
		return err
	}
	maxRate := float64(l.stream.accepted.Load()-n0) / time.Since(t0).Seconds()
	drain1, err := l.drain(ctx)
	if err != nil {
		return err
	}
	b.add(result{id("a"), fmt.Sprintf("%s: maximum batch ingest rate, %d clients, random uuid4 eventIds, %s (sets the pace of %s)", be, clients, b.opt.liveMaxFor, id("b")),
		fmt.Sprintf("%s events/s; the worker then took %s to absorb the burst", rate(maxRate), drain1), "measured", ""})

	warmup := min(time.Minute, b.opt.liveFor/4)
	half, paceText := maxRate/2, "half the maximum"
	if b.opt.livePace > 0 {
		half, paceText = b.opt.livePace, "a fixed rate (-live-pace), not half the maximum,"
	}
	step("(12) %s: ingest paced at %s (%s events/s) for %s, readers every %s", be, paceText, rate(half), b.opt.liveFor, b.opt.liveReadEvery)
	// A CPU profile of the service once the warm-up is over: where a read
	// under steady ingest spends the service's time.
	profiles := make(chan *profile, 1)
	profTimer := time.AfterFunc(warmup, func() {
		profiles <- b.profileService("live-"+string(be), int(max(time.Second, min(time.Minute, b.opt.liveFor/4)).Seconds()))
	})
	paced, err := l.run(ctx, clients, b.opt.liveFor, half)
	profTimer.Stop()
	if err != nil {
		return err
	}
	var profTop string
	select {
	case p := <-profiles:
		top, perr := p.wait()
		profTop = cmp.Or(top, fmt.Sprint("profile failed: ", perr))
	default:
	}
	drain2, err := l.drain(ctx)
	if err != nil {
		return err
	}
	step("(12) %s: ingest at full rate for %s, readers every %s", be, b.opt.liveFullFor, b.opt.liveReadEvery)
	full, err := l.run(ctx, clients, b.opt.liveFullFor, 0)
	if err != nil {
		return err
	}
	drain3, err := l.drain(ctx)
	if err != nil {
		return err
	}

	exact := l.verify(ctx, pool, now.Truncate(24*time.Hour))
	b.add(result{id("e"), fmt.Sprintf("%s: after (12), each user's 3-day report by proxy through the API equals the same report computed by plain SQL over raw events", be),
		cmp.Or(exact, "equal for all 10 users"), "equal", mark(exact == "")})

	// Paced: lag after the warm-up, and every window's reads.
	lagMax, lagOK := maxLag(paced, warmup)
	b.add(result{id("b"), fmt.Sprintf("%s: rollup lag, ingest paced at %s (%s events/s) for %s", be, paceText, rate(half), b.opt.liveFor),
		fmt.Sprintf("highest lag after the first %s **%s**; ingest %s events/s on average; highest pending %s; after the run the worker needed %s to empty its logs",
			warmup, lagText(lagMax, lagOK), rate(avgRate(paced)), pendingText(paced), drain2),
		"lag ≤ 10 s at every sample after the first minute", okIf(lagOK, lagMax <= 10)})
	worst50, worst99 := worstReads(paced)
	var reads []string
	met50, met99 := true, true
	for i, e := range l.endpoints {
		reads = append(reads, fmt.Sprintf("%s %s / %s", e.name, ms(worst50[i]), ms(worst99[i])))
		met50 = met50 && worst50[i] <= 50*time.Millisecond
		met99 = met99 && worst99[i] <= 200*time.Millisecond
	}
	b.add(result{id("c"), fmt.Sprintf("%s: reads during %s, worst %s window p50 / p99", be, id("b"), liveRow),
		strings.Join(reads, "; ") + readFailures(paced), "p50 ≤ 50 ms, p99 ≤ 200 ms in every window",
		mark(met50) + " p50, " + mark(met99) + " p99"})

	// Full rate: the lag stays bounded while ingest keeps its rate.
	firstHalf, secondHalf := halves(full, min(time.Minute, b.opt.liveFullFor/4))
	fr := avgRate(full)
	_, w99 := worstReads(full)
	b.add(result{id("d"), fmt.Sprintf("%s: ingest at full rate for %s", be, b.opt.liveFullFor),
		fmt.Sprintf("%s events/s (%.0f %% of %s); highest lag in the first half %s, in the second **%s**, last %s; highest pending %s; worst read p99 %s; the worker then needed %s to empty its logs",
			rate(fr), 100*fr/maxRate, id("a"), lagText(firstHalf, true), lagText(secondHalf, true), lastLag(full), pendingText(full), ms(slicesMax(w99)), drain3),
		"lag bounded: second half ≤ first half + 10 s", okIf(len(full) > 0 && full[0].lagOK, secondHalf <= firstHalf+10)})

	ev := fmt.Sprintf("Readers: one client per endpoint, a request every %s as a random one of the 10 users (metrics-range of one of their proxies). Lag is `proxyusage_rollup_lag_seconds`, pending `proxyusage_rollup_pending_invalidations`, both read from the service's /metrics at the end of each row, with how long before it the worker last finished a run (`proxyusage_rollup_last_success_timestamp_seconds`): the service refreshes both gauges when a run ends, so a value repeated over rows is that old. Reads are p50 / p99 of the row's requests (n in brackets). Pacing is open-loop: batch k is due k × %d / rate seconds after the start, and a client behind schedule sends at once, so a service that cannot keep the pace runs at full rate (the events/s column shows it).\n\n",
		b.opt.liveReadEvery, b.opt.batchSize)
	ev += fmt.Sprintf("Paced at %s events/s (%s):\n\n%s\nFull rate (%s):\n\n%s", rate(half), id("b"), l.table(paced), id("d"), l.table(full))
	if profTop != "" {
		ev += "\nService CPU profile after the warm-up of " + id("b") + " (`go tool pprof -top`, " + b.opt.profDir + "/live-" + string(be) + ".cpu.pprof):\n\n```\n" + profTop + "\n```\n"
	}
	ev += "\nServer time per statement over the whole of (12) on this backend (`pg_stat_statements`):\n\n" + topStatements(ctx, pool, 10)
	b.addEvidence(fmt.Sprintf("(12) rollups under sustained ingest on %s", be), ev)
	return nil
}

// run ingests for d (paced to perSecond, or at full rate when 0) while
// the readers sample, recording a row every liveRow.
func (l *live) run(ctx context.Context, clients int, d time.Duration, perSecond float64) ([]liveSample, error) {
	b := l.b
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	windows := make([]readWindow, len(l.endpoints))
	var wg sync.WaitGroup
	for i, e := range l.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(b.opt.seed, uint64(i)))
			tick := time.NewTicker(b.opt.liveReadEvery)
			defer tick.Stop()
			for {
				u := l.users[rng.IntN(len(l.users))]
				lat, err := l.get(ctx, e.path(u, l.owned[u], rng), l.tokens[u])
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				if err != nil {
					windows[i].fails++
					if windows[i].fails == 1 {
						fmt.Printf("\n  %s: %v\n", e.name, err)
					}
				} else {
					windows[i].lat = append(windows[i].lat, lat)
				}
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	var samples []liveSample
	t0 := time.Now()
	last := l.stream.accepted.Load()
	lastAt := t0
	sample := func() {
		now := time.Now()
		n := l.stream.accepted.Load()
		m := b.scrape()
		s := liveSample{at: now.Sub(t0), rate: float64(n-last) / now.Sub(lastAt).Seconds()}
		last, lastAt = n, now
		s.lag, s.lagOK = m["proxyusage_rollup_lag_seconds"]
		s.pending, s.pendingOK = m["proxyusage_rollup_pending_invalidations"]
		if last, ok := m["proxyusage_rollup_last_success_timestamp_seconds"]; ok && last > 0 {
			s.sinceRun, s.sinceRunOK = float64(now.UnixNano())/1e9-last, true
		}
		mu.Lock()
		for i := range windows {
			s.p50 = append(s.p50, quantile(windows[i].lat, 0.5))
			s.p99 = append(s.p99, quantile(windows[i].lat, 0.99))
			s.reads = append(s.reads, len(windows[i].lat))
			s.fail = append(s.fail, windows[i].fails)
			windows[i] = readWindow{}
		}
		mu.Unlock()
		samples = append(samples, s)
		endProgress()
		fmt.Print("  " + l.rowText(s, false))
	}
	head := []string{"t", "events/s", "lag", "pending", "last run"}
	for _, e := range l.endpoints {
		head = append(head, e.name+" p50 / p99 (n)")
	}
	fmt.Println("  " + strings.Join(head, "  "))
	done := make(chan error, 1)
	go func() {
		done <- l.stream.run(ctx, l.url, l.tok, l.tpl, clients, d, perSecond, b.opt.seed+17)
	}()
	tick := time.NewTicker(liveRow)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case err = <-done:
			break loop
		case <-tick.C:
			sample()
		}
	}
	if err == nil && time.Since(lastAt) >= liveRow/2 {
		sample()
	}
	cancel()
	wg.Wait()
	return samples, err
}

// verify compares each user's 3-day report by proxy with the same report
// computed from raw events (reads.go), and describes the first difference
// ("" when there is none). The rolled-up answer must equal it whatever the
// worker still has pending.
func (l *live) verify(ctx context.Context, pool *pgxpool.Pool, today time.Time) string {
	step("(12) %s: checking each user's 3-day report against raw events", l.be)
	r := &reads{b: l.b, pool: pool}
	from := today.AddDate(0, 0, -2)
	raw := r.rawReport("proxy")
	for _, u := range l.users {
		q := query{path: "/proxy/usage/report?groupBy=proxy&startDate=" + from.Format(dateLayout) + "&endDate=" + today.Format(dateLayout),
			token: l.tokens[u], userID: u, proxies: l.owned[u], from: from, to: today}
		want, err := raw(ctx, q)
		if err != nil {
			return "raw SQL: " + err.Error()
		}
		body, _, err := r.get(ctx, q)
		if err != nil {
			return err.Error()
		}
		if err := checkReport(body, want); err != nil {
			return fmt.Sprintf("%s: API and raw SQL differ: %v", u, err)
		}
	}
	return ""
}

// get reads path as a user and returns the latency.
func (l *live) get(ctx context.Context, path, tok string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	t := time.Now()
	resp, err := l.b.client.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return d, nil
}

// drain waits until the service reports no pending invalidations and no
// lag, and says how long that took.
func (l *live) drain(ctx context.Context) (string, error) {
	t0 := time.Now()
	for {
		m := l.b.scrape()
		p, pok := m["proxyusage_rollup_pending_invalidations"]
		lag, lok := m["proxyusage_rollup_lag_seconds"]
		if !pok && !lok {
			return "(no rollup metrics)", nil
		}
		progress("waiting for the worker: pending %s, lag %s  (%.0f s)", orDash(p, pok, "%.0f"), orDash(lag, lok, "%.1f s"), time.Since(t0).Seconds())
		if (!pok || p == 0) && (!lok || lag == 0) {
			endProgress()
			return fmt.Sprintf("%.0f s", time.Since(t0).Seconds()), nil
		}
		if time.Since(t0) > liveDrainLimit {
			endProgress()
			return fmt.Sprintf("more than %s (still pending %s)", liveDrainLimit, orDash(p, pok, "%.0f")), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (l *live) rowText(s liveSample, markdown bool) string {
	cells := []string{fmt.Sprintf("%.0f s", s.at.Seconds()), rate(s.rate), orDash(s.lag, s.lagOK, "%.1f s"), orDash(s.pending, s.pendingOK, "%.0f"),
		orDash(s.sinceRun, s.sinceRunOK, "%.0f s ago")}
	for i := range s.p50 {
		c := fmt.Sprintf("%s / %s (%d)", ms(s.p50[i]), ms(s.p99[i]), s.reads[i])
		if s.fail[i] > 0 {
			c += fmt.Sprintf(", %d failed", s.fail[i])
		}
		cells = append(cells, c)
	}
	if markdown {
		return "| " + strings.Join(cells, " | ") + " |\n"
	}
	return strings.Join(cells, "  ") + "\n"
}

func (l *live) table(samples []liveSample) string {
	var sb strings.Builder
	sb.WriteString("| t | ingest events/s | rollup lag | pending invalidations | worker's last successful run |")
	align := "|---:|---:|---:|---:|---:|"
	for _, e := range l.endpoints {
		sb.WriteString(" " + e.name + " p50 / p99 |")
		align += "---:|"
	}
	sb.WriteString("\n" + align + "\n")
	for _, s := range samples {
		sb.WriteString(l.rowText(s, true))
	}
	return sb.String()
}

// maxLag is the highest lag of the samples after warmup.
func maxLag(samples []liveSample, warmup time.Duration) (float64, bool) {
	out, ok := 0.0, false
	for _, s := range samples {
		if s.at > warmup && s.lagOK {
			out, ok = math.Max(out, s.lag), true
		}
	}
	return out, ok
}

// halves are the highest lag in each half of the samples after warmup.
func halves(samples []liveSample, warmup time.Duration) (first, second float64) {
	var after []liveSample
	for _, s := range samples {
		if s.at > warmup && s.lagOK {
			after = append(after, s)
		}
	}
	for i, s := range after {
		if i < len(after)/2 {
			first = math.Max(first, s.lag)
		} else {
			second = math.Max(second, s.lag)
		}
	}
	return first, second
}

func lastLag(samples []liveSample) string {
	if len(samples) == 0 {
		return "–"
	}
	s := samples[len(samples)-1]
	return orDash(s.lag, s.lagOK, "%.1f s")
}

func lagText(v float64, ok bool) string { return orDash(v, ok, "%.1f s") }

func pendingText(samples []liveSample) string {
	out, ok := 0.0, false
	for _, s := range samples {
		if s.pendingOK {
			out, ok = math.Max(out, s.pending), true
		}
	}
	return orDash(out, ok, "%.0f")
}

func avgRate(samples []liveSample) float64 {
	if len(samples) == 0 {
		return 0
	}
	var sum, secs float64
	prev := time.Duration(0)
	for _, s := range samples {
		d := (s.at - prev).Seconds()
		sum += s.rate * d
		secs += d
		prev = s.at
	}
	return sum / secs
}

// worstReads are each endpoint's highest window p50 and p99.
func worstReads(samples []liveSample) (p50, p99 []time.Duration) {
	for _, s := range samples {
		for i := range s.p50 {
			if len(p50) <= i {
				p50, p99 = append(p50, 0), append(p99, 0)
			}
			p50[i], p99[i] = max(p50[i], s.p50[i]), max(p99[i], s.p99[i])
		}
	}
	return p50, p99
}

func readFailures(samples []liveSample) string {
	n := 0
	for _, s := range samples {
		for _, f := range s.fail {
			n += f
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; **%d reads failed**", n)
}

func slicesMax(ds []time.Duration) time.Duration {
	var out time.Duration
	for _, d := range ds {
		out = max(out, d)
	}
	return out
}

// okIf marks met when the measure exists.
func okIf(measured, met bool) string {
	if !measured {
		return "n/a (not exported)"
	}
	return mark(met)
}
