package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/auth"
	"proxyusage/internal/billing"
	"proxyusage/internal/database"
	"proxyusage/internal/exact"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
	"proxyusage/internal/workload"
)

const dateLayout = "2006-01-02"

// readPhases runs (4) reads over a seeded, rolled-up dataset and (6) the
// rollup catch-up after late events, against a second service process.
func (b *bench) readPhases(ctx context.Context) error {
	pool, dbURL, err := b.newDatabase(ctx, "bench_reads")
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	today := rollup.Day(now)
	first := today.AddDate(0, 0, -(b.opt.readDays - 1))
	gen := workload.New(workload.Config{Seed: b.opt.seed + 1, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: first, End: now, Events: b.opt.readEvents, Prefix: "r"})
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	step("(4) seeding %s events over %d days (%d proxies, %d users) straight into usage_events with invalidation logs",
		count(b.opt.readEvents), b.opt.readDays, b.opt.proxies, b.opt.users)
	t0 := time.Now()
	n, err := workload.Seed(ctx, pool, gen, 50_000, func(done int) {
		progress("%s/%s events  %s events/s", count(done), count(b.opt.readEvents), rate(float64(done)/time.Since(t0).Seconds()))
	})
	endProgress()
	if err != nil {
		return err
	}
	seedTime := time.Since(t0)
	step("pairing connections in bulk (workload.PairAll: rollup.Pair over every connection)")
	t1 := time.Now()
	if err := workload.PairAll(ctx, pool, 24*time.Hour, func(n int) {
		progress("%s connections paired", count(n))
	}); err != nil {
		return err
	}
	endProgress()
	pairTime := time.Since(t1)
	rollTime, err := b.rollUp(ctx, pool)
	if err != nil {
		return err
	}
	step("VACUUM ANALYZE")
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		return err
	}
	var tableSize, dailyRows, histRows string
	var perDay float64
	_ = pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM usage_latency_daily)::float8 / greatest(1, (SELECT count(*) FROM usage_daily))`).Scan(&perDay)
	_ = pool.QueryRow(ctx, `SELECT pg_size_pretty(hypertable_size('usage_events'))`).Scan(&tableSize)
	if tableSize == "" {
		_ = pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size('usage_events'))`).Scan(&tableSize)
	}
	_ = pool.QueryRow(ctx, `SELECT to_char(count(*), 'FM999,999,999') FROM usage_daily`).Scan(&dailyRows)
	_ = pool.QueryRow(ctx, `SELECT to_char(count(*), 'FM999,999,999') FROM usage_latency_daily`).Scan(&histRows)
	dataset := fmt.Sprintf("Read dataset: %s events over %d days (%s to %s), %d proxies of %d users, usage_events %s; seeded by COPY with its invalidation logs in %.0f s, connections paired in bulk (`workload.PairAll`, the worker's `rollup.Pair` over every connection at once) in %.0f s, days and peaks rolled up by `rollup.Worker` (batch %s) in %.0f s; %s rows in usage_daily, %s latency buckets in usage_latency_daily (%.0f per proxy-day), read packed one row per proxy-day from usage_latency_daily_packed.",
		count(n), b.opt.readDays, first.Format(dateLayout), today.Format(dateLayout), b.opt.proxies, b.opt.users, tableSize,
		seedTime.Seconds(), pairTime.Seconds(), count(b.opt.rollupBatch), rollTime.Seconds(), dailyRows, histRows, perDay)
	if b.backend == database.TimescaleDB {
		var compressed, chunks int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE is_compressed), count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'usage_events'`).Scan(&compressed, &chunks); err == nil {
			dataset += fmt.Sprintf(" Chunks of usage_events: %d, %d of them compressed by the policy at read time.", chunks, compressed)
		}
	}
	fmt.Println("  " + dataset)

	svc, err := b.startService(ctx, dbURL, "reads")
	if err != nil {
		return err
	}
	r := &reads{b: b, pool: pool, gen: gen, today: today, rng: rand.New(rand.NewPCG(b.opt.seed, 4))}
	if err := r.load(ctx); err != nil {
		return err
	}
	if err := r.measure(ctx, dataset); err != nil {
		return err
	}
	if err := b.catchUp(ctx, pool, r); err != nil {
		return err
	}
	step("stopping the service")
	err = svc.stop()
	b.svc = nil
	return err
}

// rollUp drains the invalidation logs with the production rollup worker
// (larger batches than the service's default, same code).
func (b *bench) rollUp(ctx context.Context, pool *pgxpool.Pool) (time.Duration, error) {
	w, err := rollup.NewWorker(rollup.WorkerConfig{Pool: pool, Backend: b.backend, Metrics: telemetry.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConnectionAge: 24 * time.Hour,
		BatchSize: b.opt.rollupBatch, RunTimeout: time.Hour})
	if err != nil {
		return 0, err
	}
	step("rolling up with rollup.Worker.RunOnce")
	t0 := time.Now()
	for {
		if _, err := w.RunOnce(ctx); err != nil {
			return 0, err
		}
		days, conns, err := pending(ctx, pool)
		if err != nil {
			return 0, err
		}
		progress("pending: %s proxy-days, %s connection events  (%.0f s)", count(days), count(conns), time.Since(t0).Seconds())
		if days+conns == 0 {
			break
		}
	}
	endProgress()
	return time.Since(t0), nil
}

func pending(ctx context.Context, pool *pgxpool.Pool) (days, conns int, err error) {
	err = pool.QueryRow(ctx, `SELECT (SELECT coalesce(sum(cardinality(proxy_ids)), 0) FROM usage_rollup_deltas), (SELECT coalesce(sum(cardinality(proxy_ids)), 0) FROM usage_connection_invalidations)`).Scan(&days, &conns)
	return days, conns, err
}

// drained says whether the delta and connection logs are empty: a cheap check
// to poll while the worker runs (counting the logs is not).
func drained(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var empty bool
	err := pool.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM usage_rollup_deltas) AND NOT EXISTS (SELECT 1 FROM usage_connection_invalidations)`).Scan(&empty)
	return empty, err
}

// watch polls until the logs are empty or limit passes, printing the
// backlog every few seconds (counting it costs the database real work).
func watch(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) (time.Duration, error) {
	t0 := time.Now()
	var lastCount time.Time
	for {
		empty, err := drained(ctx, pool)
		if err != nil {
			return 0, err
		}
		if empty {
			progress("pending: none  (%.0f s)", time.Since(t0).Seconds())
			return time.Since(t0), nil
		}
		if time.Since(t0) > limit {
			return time.Since(t0), fmt.Errorf("rollup did not catch up within %s", limit)
		}
		if time.Since(lastCount) > 5*time.Second {
			lastCount = time.Now()
			if d, c, err := pending(ctx, pool); err == nil {
				progress("pending: %s proxy-days, %s connections  (%.0f s)", count(d), count(c), time.Since(t0).Seconds())
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

type reads struct {
	b      *bench
	pool   *pgxpool.Pool
	gen    *workload.Generator
	today  time.Time
	rng    *rand.Rand
	tokens map[string]string
	owned  map[string][]string // user → proxies
	users  []string
	plans  billing.Plans
}

func (r *reads) load(ctx context.Context) error {
	r.tokens, r.owned = map[string]string{}, map[string][]string{}
	for _, p := range r.gen.Proxies() {
		r.owned[p.UserID] = append(r.owned[p.UserID], p.ID)
	}
	for _, u := range r.gen.Users() {
		tok, err := auth.Mint([]byte(secret), u, nil, 24*time.Hour, "", "")
		if err != nil {
			return err
		}
		r.tokens[u] = tok
		r.users = append(r.users, u)
	}
	r.plans = billing.DefaultPlans()
	return nil
}

// query is one read request: the API path and the same question for raw SQL.
type query struct {
	path     string
	token    string
	proxies  []string
	userID   string
	from, to time.Time
}

type readCase struct {
	id, name string
	pick     func() query
	raw      func(ctx context.Context, q query) (any, error)
	check    func(body []byte, raw any) error
}

func (r *reads) cases() []readCase {
	user := func() string { return r.users[r.rng.IntN(len(r.users))] }
	last30 := r.today.AddDate(0, 0, -29)
	monthStart := time.Date(r.today.Year(), r.today.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -1, 0)
	monthEnd := monthStart.AddDate(0, 1, -1)
	report := func(groupBy string) func() query {
		return func() query {
			u := user()
			return query{path: fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s&groupBy=%s", last30.Format(dateLayout), r.today.Format(dateLayout), groupBy),
				token: r.tokens[u], userID: u, proxies: r.owned[u], from: last30, to: r.today}
		}
	}
	return []readCase{
		{id: "4a", name: "metrics-range, one proxy, 1 year (365 days)", pick: func() query {
			u := user()
			p := r.owned[u][r.rng.IntN(len(r.owned[u]))]
			from := r.today.AddDate(0, 0, -364)
			return query{path: fmt.Sprintf("/proxy/usage/%s/metrics?startDate=%s&endDate=%s", p, from.Format(dateLayout), r.today.Format(dateLayout)),
				token: r.tokens[u], userID: u, proxies: []string{p}, from: from, to: r.today}
		}, raw: r.rawGroups("day"), check: checkRange},
		{id: "4b", name: "report, 30 days, groupBy=day (a user's 10 proxies)", pick: report("day"), raw: r.rawReport("day"), check: checkReport},
		{id: "4c", name: "report, 30 days, groupBy=proxy", pick: report("proxy"), raw: r.rawReport("proxy"), check: checkReport},
		{id: "4d", name: "aggregation, 30 days", pick: func() query {
			u := user()
			return query{path: fmt.Sprintf("/proxy/usage/aggregation?periodStart=%s&periodEnd=%s", last30.Format(dateLayout), r.today.Format(dateLayout)),
				token: r.tokens[u], userID: u, proxies: r.owned[u], from: last30, to: r.today}
		}, raw: r.rawGroups("none"), check: checkAggregation},
		{id: "4e", name: "billing, last calendar month", pick: func() query {
			u := user()
			return query{path: fmt.Sprintf("/proxy/usage/billing?periodStart=%s&periodEnd=%s", monthStart.Format(dateLayout), monthEnd.Format(dateLayout)),
				token: r.tokens[u], userID: u, proxies: r.owned[u], from: monthStart, to: monthEnd}
		}, raw: r.rawBill, check: checkBill},
	}
}

func (r *reads) get(ctx context.Context, q query) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.b.svc.url+q.path, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+q.token)
	t := time.Now()
	resp, err := r.b.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: %d %s", q.path, resp.StatusCode, body)
	}
	return body, d, nil
}

func (r *reads) measure(ctx context.Context, dataset string) error {
	cases := r.cases()
	step("(4) read endpoints: %d sequential requests each, then %d raw-SQL runs each", r.b.opt.readRequests, r.b.opt.rawRequests)
	// Warm up connections, caches and prepared statements.
	for _, c := range cases {
		for range 20 {
			if _, _, err := r.get(ctx, c.pick()); err != nil {
				return err
			}
		}
	}
	resetStatements(ctx, r.pool)
	estimate := time.Duration(len(cases)*r.b.opt.readRequests) * 3 * time.Millisecond
	prof := r.b.profileService("reads", profileSeconds(estimate))
	start := r.b.cpu()
	api := make([][]time.Duration, len(cases))
	for i, c := range cases {
		for k := range r.b.opt.readRequests {
			_, d, err := r.get(ctx, c.pick())
			if err != nil {
				return err
			}
			api[i] = append(api[i], d)
			if k%20 == 0 {
				progress("%s %s: %d/%d requests", c.id, c.name, k, r.b.opt.readRequests)
			}
		}
	}
	end := r.b.cpu()
	endProgress()
	stmts := topStatements(ctx, r.pool, 8)
	top, perr := prof.wait()

	var checks []string
	for i, c := range cases {
		var raw []time.Duration
		for k := range r.b.opt.rawRequests {
			q := c.pick()
			progress("%s raw SQL: %d/%d", c.id, k, r.b.opt.rawRequests)
			t := time.Now()
			ans, err := c.raw(ctx, q)
			if err != nil {
				return fmt.Errorf("%s raw: %w", c.id, err)
			}
			raw = append(raw, time.Since(t))
			// The API answers the same question the same way.
			body, _, err := r.get(ctx, q)
			if err != nil {
				return err
			}
			if err := c.check(body, ans); err != nil {
				return fmt.Errorf("%s: API and raw SQL disagree for %s: %w", c.id, q.path, err)
			}
		}
		endProgress()
		checks = append(checks, c.id)
		a50, a99 := quantile(api[i], 0.5), quantile(api[i], 0.99)
		r50, r99 := quantile(raw, 0.5), quantile(raw, 0.99)
		speed := float64(r50) / float64(a50)
		r.b.add(result{c.id, c.name,
			fmt.Sprintf("API p50 %s, **p99 %s**; raw SQL p50 %s, p99 %s; **%.0f×** faster (p50)", ms(a50), ms(a99), ms(r50), ms(r99), speed),
			"p99 < 50 ms, ≥ 100×", mark(a99 < 50*time.Millisecond) + " p99, " + mark(speed >= 100) + " speed-up"})
	}
	ev := dataset + "\n\nAPI requests are sequential (one client, keep-alive) with a random user or proxy each, after a warm-up; the raw-SQL answer is one plain SQL statement over usage_events per question (`rawSQL` in cmd/bench/reads.go: sums, `percentile_disc` for p95, start/end pairing and a window-function sweep for peak concurrency), plus the same money arithmetic (`billing.Compute`) for the bill. Every raw answer was compared with the API's for the same parameters (cases " +
		strings.Join(checks, ", ") + "): counts, bytes, peaks and maxima equal, averages equal, p95 within 5 %, bill totals equal.\n\n"
	ev += "CPU during the API requests: " + cpuSplit(start, end) + ".\n\nServer time per statement during the API requests (`pg_stat_statements`):\n\n" + stmts
	if perr == nil {
		ev += "\nService CPU profile during the API requests (`go tool pprof -top`):\n\n```\n" + top + "\n```\n"
	}
	// Plans of one report, rolled up and raw.
	q := cases[1].pick()
	reader, err := rollup.NewReader(ctx, r.pool, r.b.backend, 24*time.Hour)
	if err != nil {
		return err
	}
	if plan, err := reader.ExplainHistograms(ctx, q.proxies, q.from, q.to, rollup.ByDay); err == nil {
		ev += "\n<details><summary>EXPLAIN (ANALYZE, BUFFERS) of the report's latency histogram read, the bulk of its rows (rollup.Reader.ExplainHistograms)</summary>\n\n```\n" + plan + "\n```\n</details>\n"
	}
	if plan, err := explain(ctx, r.pool, rawSQL("day"), q.proxies, q.from, q.to); err == nil {
		ev += "\n<details><summary>EXPLAIN (ANALYZE, BUFFERS) of the same report computed from raw events</summary>\n\n```\n" + plan + "\n```\n</details>\n"
	}
	r.b.addEvidence("(4) reads", ev)
	return nil
}

func explain(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) (string, error) {
	rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+sql, args...)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n"), err
}

// rawSQL computes the daily metrics per group straight from usage_events: $1
// proxies, $2..$3 inclusive UTC days. Peaks pair each start with the first
// end of its connection id at or after it (a hash join: the workload never
// reuses connection ids), close unpaired starts after 24 hours and sweep
// the per-day edges, ends before starts. Connection events are read from
// one day before the range to two days after it: the workload's
// connections last at most 6 hours, unpaired ones 24 hours.
func rawSQL(group string) string {
	cols := map[string]string{
		"day":   "NULL::text AS gp, day AS gd",
		"proxy": "proxy_id AS gp, NULL::date AS gd",
		"none":  "NULL::text AS gp, NULL::date AS gd",
	}[group]
	return `
WITH ev AS (
  SELECT proxy_id, (time AT TIME ZONE 'UTC')::date AS day, event_type, bytes_sent, bytes_received, duration_us, latency_us
    FROM usage_events
   WHERE proxy_id = ANY($1) AND time >= $2::date::timestamp AT TIME ZONE 'UTC' AND time < ($3::date + 1)::timestamp AT TIME ZONE 'UTC'
), sums AS (
  SELECT ` + cols + `,
         count(*) AS events,
         count(*) FILTER (WHERE event_type = 'connection_start') AS starts,
         count(*) FILTER (WHERE event_type = 'connection_end') AS ends,
         count(*) FILTER (WHERE event_type = 'error') AS errors,
         sum(bytes_sent)::text AS sent, sum(bytes_received)::text AS received,
         (avg(duration_us) FILTER (WHERE event_type = 'connection_end'))::float8 AS avg_dur,
         avg(latency_us)::float8 AS avg_lat, max(latency_us) AS max_lat,
         percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_us) AS p95_lat,
         count(DISTINCT proxy_id) AS proxies, count(DISTINCT day) AS days
    FROM ev GROUP BY 1, 2
), conn_events AS (
  SELECT proxy_id, connection_id, time, event_type FROM usage_events
   WHERE proxy_id = ANY($1) AND event_type IN ('connection_start', 'connection_end')
     AND time >= ($2::date - 1)::timestamp AT TIME ZONE 'UTC' AND time < ($3::date + 2)::timestamp AT TIME ZONE 'UTC'
), iv AS (
  SELECT st.proxy_id, st.time AS s, coalesce(min(en.time), st.time + interval '24 hours') AS e
    FROM conn_events st
    LEFT JOIN conn_events en ON en.proxy_id = st.proxy_id AND en.connection_id = st.connection_id
                            AND en.event_type = 'connection_end' AND en.time >= st.time
   WHERE st.event_type = 'connection_start' AND st.time < ($3::date + 1)::timestamp AT TIME ZONE 'UTC'
   GROUP BY st.proxy_id, st.connection_id, st.time
), edges AS (
  SELECT iv.proxy_id, d::date AS day, greatest(iv.s, d) AS at, 1 AS delta
    FROM iv, generate_series(date_trunc('day', iv.s), iv.e - interval '1 microsecond', interval '1 day') AS d
   WHERE iv.s < iv.e
  UNION ALL
  SELECT iv.proxy_id, date_trunc('day', iv.e)::date, iv.e, -1
    FROM iv WHERE iv.s < iv.e AND iv.e > date_trunc('day', iv.e)
), peaks AS (
  SELECT proxy_id, day, max(open) AS peak FROM (
    SELECT proxy_id, day, sum(delta) OVER (PARTITION BY proxy_id, day ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS open
      FROM edges WHERE day BETWEEN $2 AND $3) r
   GROUP BY proxy_id, day
), gpeaks AS (
  SELECT ` + cols + `, max(peak) AS peak FROM peaks GROUP BY 1, 2
)
SELECT coalesce(s.gp, p.gp), coalesce(s.gd, p.gd), coalesce(s.events, 0), coalesce(s.starts, 0), coalesce(s.ends, 0),
       coalesce(s.errors, 0), coalesce(s.sent, '0'), coalesce(s.received, '0'), s.avg_dur, s.avg_lat, s.max_lat, s.p95_lat,
       coalesce(s.proxies, 0), coalesce(s.days, 0), coalesce(p.peak, 0)
  FROM sums s FULL JOIN gpeaks p ON coalesce(s.gp, '') = coalesce(p.gp, '') AND coalesce(s.gd, '-infinity') = coalesce(p.gd, '-infinity')`
}

type rawRow struct {
	proxy                      *string
	day                        *time.Time
	events, starts, ends, errs int64
	sent, received             exact.Sum
	avgDur, avgLat             *float64
	maxLat, p95                *int64
	proxies, days, peak        int64
}

func (r *reads) rawGroups(group string) func(ctx context.Context, q query) (any, error) {
	sql := rawSQL(group)
	return func(ctx context.Context, q query) (any, error) {
		// Planned for its parameters every time, as an ad-hoc query would be
		// (a cached generic plan can be far worse over many chunks).
		rows, err := r.pool.Query(ctx, sql, pgx.QueryExecModeExec, q.proxies, q.from, q.to)
		if err != nil {
			return nil, err
		}
		var out []rawRow
		var x rawRow
		_, err = pgx.ForEachRow(rows, []any{&x.proxy, &x.day, &x.events, &x.starts, &x.ends, &x.errs, &x.sent, &x.received,
			&x.avgDur, &x.avgLat, &x.maxLat, &x.p95, &x.proxies, &x.days, &x.peak}, func() error {
			out = append(out, x)
			return nil
		})
		return out, err
	}
}

type rawReport struct{ rows, totals []rawRow }

func (r *reads) rawReport(group string) func(ctx context.Context, q query) (any, error) {
	rows, totals := r.rawGroups(group), r.rawGroups("none")
	return func(ctx context.Context, q query) (any, error) {
		a, err := rows(ctx, q)
		if err != nil {
			return nil, err
		}
		t, err := totals(ctx, q)
		if err != nil {
			return nil, err
		}
		return rawReport{a.([]rawRow), t.([]rawRow)}, nil
	}
}

func (r *reads) rawBill(ctx context.Context, q query) (any, error) {
	rows, err := r.pool.Query(ctx, `
		SELECT (time AT TIME ZONE 'UTC')::date, sum(bytes_sent + bytes_received)::text FROM usage_events
		 WHERE proxy_id = ANY($1) AND time >= $2::date::timestamp AT TIME ZONE 'UTC' AND time < ($3::date + 1)::timestamp AT TIME ZONE 'UTC'
		 GROUP BY 1`, pgx.QueryExecModeExec, q.proxies, q.from, q.to)
	if err != nil {
		return nil, err
	}
	daily := map[time.Time]exact.Sum{}
	var d time.Time
	var n exact.Sum
	if _, err := pgx.ForEachRow(rows, []any{&d, &n}, func() error {
		daily[d.UTC()] = n
		return nil
	}); err != nil {
		return nil, err
	}
	history, err := user.NewStore(r.pool).History(ctx, q.userID)
	if err != nil {
		return nil, err
	}
	var contracts billing.Contracts
	var c billing.DatedContract
	rows, err = r.pool.Query(ctx, `SELECT effective_from, base_monthly, per_gb, currency FROM user_contracts WHERE user_id = $1 ORDER BY effective_from`, q.userID)
	if err != nil {
		return nil, err
	}
	if _, err := pgx.ForEachRow(rows, []any{&c.EffectiveFrom, &c.BaseMonthly, &c.PerGB, &c.Currency}, func() error {
		contracts = append(contracts, c)
		return nil
	}); err != nil {
		return nil, err
	}
	return billing.Compute(r.plans, billing.Input{UserID: q.userID, Start: q.from, End: q.to, History: history, Contracts: contracts, DailyBytes: daily})
}

// Comparisons of API answers with raw answers.

func closeTo(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))+1e-9
}

func compare(m usage.Metrics, x *rawRow) error {
	var z rawRow
	if x == nil {
		x = &z
	}
	type pair struct {
		name string
		a, b int64
	}
	for _, p := range []pair{{"eventCount", m.EventCount, x.events}, {"connectionCount", m.ConnectionCount, x.starts},
		{"successCount", m.SuccessCount, x.ends}, {"errorCount", m.ErrorCount, x.errs},
		{"peakConcurrentConnections", int64(m.PeakConcurrentConnections), x.peak}} {
		if p.a != p.b {
			return fmt.Errorf("%s: API %d, raw %d", p.name, p.a, p.b)
		}
	}
	if m.BytesSent.Cmp(x.sent) != 0 || m.BytesReceived.Cmp(x.received) != 0 {
		return fmt.Errorf("bytes sent/received: API %s/%s, raw %s/%s", m.BytesSent, m.BytesReceived, x.sent, x.received)
	}
	opt := func(name string, a *float64, b *float64, scale, rel float64) error {
		if (a == nil) != (b == nil) {
			return fmt.Errorf("%s: API %v, raw %v", name, a, b)
		}
		if a != nil && !closeTo(*a, *b/scale, rel) {
			return fmt.Errorf("%s: API %g, raw %g", name, *a, *b/scale)
		}
		return nil
	}
	f := func(v *int64) *float64 {
		if v == nil {
			return nil
		}
		x := float64(*v)
		return &x
	}
	if err := opt("avgConnectionDurationSeconds", m.AvgConnectionDurationSeconds, x.avgDur, 1e6, 1e-9); err != nil {
		return err
	}
	if err := opt("avgLatencyMs", m.AvgLatencyMs, x.avgLat, 1e3, 1e-9); err != nil {
		return err
	}
	if err := opt("maxLatencyMs", m.MaxLatencyMs, f(x.maxLat), 1e3, 1e-12); err != nil {
		return err
	}
	return opt("p95LatencyMs", m.P95LatencyMs, f(x.p95), 1e3, 0.05)
}

func byDay(rows []rawRow) map[string]*rawRow {
	out := map[string]*rawRow{}
	for i := range rows {
		if rows[i].day != nil {
			out[rows[i].day.UTC().Format(dateLayout)] = &rows[i]
		}
	}
	return out
}

func byProxy(rows []rawRow) map[string]*rawRow {
	out := map[string]*rawRow{}
	for i := range rows {
		if rows[i].proxy != nil && rows[i].events > 0 {
			out[*rows[i].proxy] = &rows[i]
		}
	}
	return out
}

func single(rows []rawRow) *rawRow {
	if len(rows) == 0 {
		return nil
	}
	return &rows[0]
}

func checkRange(body []byte, raw any) error {
	var got usage.Range
	if err := json.Unmarshal(body, &got); err != nil {
		return err
	}
	want := byDay(raw.([]rawRow))
	for _, d := range got.Metrics {
		if err := compare(d.Metrics, want[d.Date]); err != nil {
			return fmt.Errorf("%s: %w", d.Date, err)
		}
		delete(want, d.Date)
	}
	for d, x := range want {
		if x.events > 0 || x.peak > 0 {
			return fmt.Errorf("raw has %s, API does not", d)
		}
	}
	return nil
}

func checkReport(body []byte, raw any) error {
	var got usage.Report
	if err := json.Unmarshal(body, &got); err != nil {
		return err
	}
	rr := raw.(rawReport)
	if err := compare(got.Totals, single(rr.totals)); err != nil {
		return fmt.Errorf("totals: %w", err)
	}
	if got.GroupBy == "day" {
		want := byDay(rr.rows)
		for _, row := range got.Rows {
			if err := compare(row.Metrics, want[row.Date]); err != nil {
				return fmt.Errorf("%s: %w", row.Date, err)
			}
		}
		return nil
	}
	want := byProxy(rr.rows)
	if len(got.Rows) != len(want) {
		return fmt.Errorf("API has %d proxy rows, raw %d", len(got.Rows), len(want))
	}
	for _, row := range got.Rows {
		if err := compare(row.Metrics, want[row.ProxyID]); err != nil {
			return fmt.Errorf("%s: %w", row.ProxyID, err)
		}
	}
	return nil
}

func checkAggregation(body []byte, raw any) error {
	var got usage.Aggregation
	if err := json.Unmarshal(body, &got); err != nil {
		return err
	}
	x := single(raw.([]rawRow))
	if x != nil && (int64(got.ProxyCount) != x.proxies || int64(got.ActiveDays) != x.days) {
		return fmt.Errorf("proxyCount/activeDays: API %d/%d, raw %d/%d", got.ProxyCount, got.ActiveDays, x.proxies, x.days)
	}
	return compare(got.Totals, x)
}

func checkBill(body []byte, raw any) error {
	var got billing.Bill
	if err := json.Unmarshal(body, &got); err != nil {
		return err
	}
	want := raw.(billing.Bill)
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	if string(a) != string(b) {
		return fmt.Errorf("bills differ:\nAPI %s\nraw %s", a, b)
	}
	return nil
}
