package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/workload"
)

// (11) Sustained ingest with the eventIds real clients send: random uuid4.
// On each backend, in a fresh database: a raw binary COPY of the same kind
// of rows into a fresh logged copy of usage_events (the baseline), then
// batch ingest through the API for -sustained-duration with its rate per
// minute, then single-event ingest at -single-clients on a fresh service
// process (its VmHWM is that run's alone).

// templateBodies is how many distinct batch bodies the stream cycles
// through (each round with new eventIds and connection ids).
const templateBodies = 200

func (b *bench) sustained(ctx context.Context, be database.Backend) error {
	id := func(letter string) string { return "11" + letter + "-" + short(be) }
	pool, dbURL, _, err := b.newDatabaseOn(ctx, "bench_sustained_"+string(be), string(be))
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	span := b.opt.sustainedSpan
	if err := workload.SeedAccounts(ctx, pool, streamGenerator(b.opt.seed+11, now, span, 1), now); err != nil {
		return err
	}
	step("(11) %s: encoding %d template batches of %d events (100 proxies of 10 users, last %s)", be, templateBodies, b.opt.batchSize, span)
	tpl := newTemplates(b.opt.seed+11, now, span, templateBodies, b.opt.batchSize)
	tpl.follow = b.opt.sustainedFollow

	copyRate, err := b.copyBaseline(ctx, pool, tpl, b.opt.sustainedCopyRows, be)
	if err != nil {
		return err
	}
	b.add(result{id("a"), fmt.Sprintf("%s: raw binary COPY of %s rows with random uuid4 eventIds into a fresh logged copy of usage_events (same columns and indexes), one stream, 100k rows per transaction", be, count(b.opt.sustainedCopyRows)),
		rate(copyRate) + " rows/s", "baseline", ""})

	env := []string{"BACKEND=" + string(be)}
	var noWorker *pgxpool.Conn
	if b.opt.sustainedNoWorker {
		// The bench holds the rollup leader's lock, so no replica runs
		// the worker, and nothing holds ingest back for its lag: what is
		// left is ingest's own cost (it still writes the rollup logs).
		if noWorker, err = pool.Acquire(ctx); err != nil {
			return err
		}
		defer noWorker.Release()
		if _, err := noWorker.Exec(ctx, `SELECT pg_advisory_lock($1)`, database.LockRollupLeader); err != nil {
			return err
		}
		env = append(env, "INGEST_MAX_ROLLUP_LAG=1000h")
	}
	svc, err := b.startService(ctx, dbURL, "sustained-"+string(be), env...)
	if err != nil {
		return err
	}
	defer func() {
		if b.svc != nil {
			_ = b.svc.stop()
			b.svc = nil
		}
	}()
	tok, err := serviceToken()
	if err != nil {
		return err
	}
	d, clients := b.opt.sustainedFor, b.opt.sustainedClients
	window := min(time.Minute, max(10*time.Second, d/6))
	step("(11) %s: batch ingest via the API, random uuid4 eventIds, %d per request, %d clients, for %s (rate per %s)", be, b.opt.batchSize, clients, d, window)
	resetStatements(ctx, pool)
	m0 := b.scrape()
	start := b.cpu()
	run := &streamRun{}
	sample := func() map[string]float64 {
		m := b.scrape()
		maps.Copy(m, walCounters(ctx, pool))
		return m
	}
	rates, scrapes, elapsed, err := b.windowed(ctx, run, window, sample, func() error {
		return run.run(ctx, svc.url, tok, tpl, clients, d, 0, b.opt.seed+11)
	})
	end := b.cpu()
	if err != nil {
		return err
	}
	total := run.accepted.Load()
	var stored int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&stored); err != nil {
		return err
	}
	if stored != total {
		return fmt.Errorf("batch ingest: %d acknowledged, %d stored", total, stored)
	}
	avg := float64(total) / elapsed.Seconds()
	first, last := rates[0], rates[len(rates)-1]
	ratio, flat := avg/copyRate, last/first
	unit := "minute"
	if window != time.Minute {
		unit = fmt.Sprintf("%s window", window)
	}
	shape := ""
	if span != 24*time.Hour || tpl.follow {
		shape = fmt.Sprintf(", event times over the last %s", span)
		if tpl.follow {
			shape += " **moving with the clock**"
		}
	}
	if noWorker != nil {
		shape += ", **no rollup worker** (-sustained-no-worker)"
	}
	b.add(result{id("b"), fmt.Sprintf("%s: batch ingest via API, random uuid4 eventIds, %d events/request, %d clients, 100 proxies, %s sustained%s", be, b.opt.batchSize, clients, d, shape),
		fmt.Sprintf("%s events/s on average = **%.0f %%** of %s; first %s %s events/s, last %s = **%.0f %%** of the first (%s events, %d duplicates, %d retries after 503)",
			rate(avg), 100*ratio, id("a"), unit, rate(first), rate(last), 100*flat, count(int(total)), run.duplicates.Load(), run.retries.Load()),
		"≥ 70 % of COPY; last minute ≥ 85 % of the first", mark(ratio >= 0.7) + " ratio, " + mark(flat >= 0.85) + " flat"})

	storage := storagePerEvent(ctx, pool, be, stored)
	b.add(result{id("c"), fmt.Sprintf("%s: storage after (%s)", be, id("b")), storage, "measured", ""})

	var rows strings.Builder
	rows.WriteString("| " + unit + " | events/s | % of the first | group commits | mean commit | events a commit | time flushes waited for the rollups | rollup lag at the end | WAL | full-page images | checkpoints begun |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range rates {
		fmt.Fprintf(&rows, "| %d | %s | %.0f %% | %s |\n", i+1, rate(r), 100*r/first, windowCosts(scrapes[i], scrapes[i+1]))
	}
	ev := fmt.Sprintf("Rate per %s of (%s):\n\n%s\nCPU: %s.%s\n\nServer time per statement (`pg_stat_statements`):\n\n%s",
		unit, id("b"), rows.String(), cpuSplit(start, end), serverSide(m0, b.scrape(), "/proxy/usage/events"), topStatements(ctx, pool, 8))
	b.addEvidence(fmt.Sprintf("(11) sustained random-id ingest on %s", be), ev)
	step("stopping the service")
	if err := svc.stop(); err != nil {
		return err
	}
	b.svc = nil
	if noWorker != nil {
		// A service started now would spend the single-event run rolling
		// up everything that waited (its flushes held back all along).
		step("(11) %s: single-event ingest skipped (-sustained-no-worker)", be)
		return nil
	}
	return b.sustainedSingles(ctx, pool, dbURL, be, id("d"))
}

// windowed runs work while recording the accepted events of run every
// window, and returns the rate of each full window and the time taken.
func (b *bench) windowed(ctx context.Context, run *streamRun, window time.Duration, sample func() map[string]float64, work func() error) ([]float64, []map[string]float64, time.Duration, error) {
	t0 := time.Now()
	var mu sync.Mutex
	var marks []int64
	// sample's counters at each mark (the service's metrics, the
	// database's WAL): what each window cost.
	scrapes := []map[string]float64{sample()}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(window)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := run.accepted.Load()
				m := sample()
				mu.Lock()
				marks = append(marks, n)
				scrapes = append(scrapes, m)
				mu.Unlock()
			}
		}
	}()
	stop := b.ticker(func(el time.Duration) {
		n := run.accepted.Load()
		progress("%.0f s  %s events  %s events/s on average", el.Seconds(), count(int(n)), rate(float64(n)/el.Seconds()))
	})
	err := work()
	elapsed := time.Since(t0)
	close(done)
	wg.Wait()
	stop()
	endProgress()
	if err != nil {
		return nil, nil, 0, err
	}
	// The last, partial window counts when it is at least half a window.
	if rest := elapsed - time.Duration(len(marks))*window; rest >= window/2 || len(marks) == 0 {
		marks = append(marks, run.accepted.Load())
		scrapes = append(scrapes, sample())
	}
	rates := make([]float64, len(marks))
	prev := int64(0)
	for i, m := range marks {
		span := window
		if i == len(marks)-1 && time.Duration(len(marks))*window > elapsed {
			span = elapsed - time.Duration(i)*window
		}
		rates[i] = float64(m-prev) / span.Seconds()
		prev = m
	}
	return rates, scrapes, elapsed, nil
}

// windowCosts describes, between two scrapes of the service, its group
// commits (how many, their mean duration and size), how long flushes
// waited for the rollups (INGEST_MAX_ROLLUP_LAG) and the rollup lag at
// the end: table cells of the per-window rates.
func windowCosts(a, z map[string]float64) string {
	d := func(k string) float64 { return z[k] - a[k] }
	n := d("proxyusage_ingest_flush_duration_seconds_count")
	ms, size := 0.0, 0.0
	if n > 0 {
		ms = 1000 * d("proxyusage_ingest_flush_duration_seconds_sum") / n
		size = d("proxyusage_ingest_flush_events_sum") / n
	}
	return fmt.Sprintf("%.0f | %.1f ms | %.0f | %.1f s | %.1f s | %.0f MB | %.0f k | %.0f", n, ms, size,
		d("proxyusage_ingest_held_back_seconds_total"), z["proxyusage_rollup_lag_seconds"],
		d("wal_bytes")/(1<<20), d("wal_fpi")/1000, d("checkpoints"))
}

// walCounters reads the cluster's WAL and checkpoint counters: how many
// bytes and full-page images the log took and how many checkpoints
// began. (PostgreSQL 15's buffers_backend is left out: it counts every
// relation extension and appears only when a checkpoint reports it.)
func walCounters(ctx context.Context, pool *pgxpool.Pool) map[string]float64 {
	var walBytes, fpi, checkpoints float64
	err := pool.QueryRow(ctx, `SELECT w.wal_bytes::float8, w.wal_fpi::float8,
		(b.checkpoints_timed + b.checkpoints_req)::float8
		FROM pg_stat_wal w, pg_stat_bgwriter b`).Scan(&walBytes, &fpi, &checkpoints)
	if err != nil {
		return nil
	}
	return map[string]float64{"wal_bytes": walBytes, "wal_fpi": fpi, "checkpoints": checkpoints}
}

// copyBaseline copies n rows of the stream (random uuid4 eventIds) into a
// fresh logged table like usage_events, 100k rows per transaction, and
// returns rows per second of the COPY time (building the rows is not
// timed).
func (b *bench) copyBaseline(ctx context.Context, pool *pgxpool.Pool, tpl *templates, n int, be database.Backend) (float64, error) {
	step("(11) %s: raw binary COPY of %s rows with random uuid4 eventIds into bench_copy (LIKE usage_events INCLUDING ALL)", be, count(n))
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_copy (LIKE usage_events INCLUDING ALL)`); err != nil {
		return 0, err
	}
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return 0, err
	}
	rng := rand.NewChaCha8(seedBytes(b.opt.seed, 1100))
	const chunk = 100_000
	var took time.Duration
	for i := 0; i < n; i += chunk {
		part := tpl.copyRows(i, min(chunk, n-i), rng)
		t := time.Now()
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := workload.CopyEvents(ctx, tx, "bench_copy", part, time.Now())
			return err
		})
		if err != nil {
			return 0, err
		}
		took += time.Since(t)
		progress("%s rows  %s rows/s", count(i+len(part)), rate(float64(i+len(part))/took.Seconds()))
	}
	endProgress()
	if _, err := pool.Exec(ctx, `DROP TABLE bench_copy`); err != nil {
		return 0, err
	}
	_, err := pool.Exec(ctx, `CHECKPOINT`)
	return float64(n) / took.Seconds(), err
}

// storagePerEvent describes the bytes per stored event of usage_events
// and of the whole database (whatever else ingest keeps per event, such
// as idempotency keys, is in the latter).
func storagePerEvent(ctx context.Context, pool *pgxpool.Pool, be database.Backend, events int64) string {
	if events == 0 {
		return "no events"
	}
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return err.Error()
	}
	size := `pg_total_relation_size('usage_events')`
	if be == database.TimescaleDB {
		size = `hypertable_size('usage_events')`
	}
	var table, db int64
	if err := pool.QueryRow(ctx, `SELECT `+size+`, pg_database_size(current_database())`).Scan(&table, &db); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("usage_events %s = **%.0f bytes per event**; the whole database %s = %.0f bytes per event (%s events)",
		mb(table), float64(table)/float64(events), mb(db), float64(db)/float64(events), count(int(events)))
}

// sustainedSingles is single-event ingest at -single-clients with random
// uuid4 eventIds on a fresh service process, and that process's peak RSS.
func (b *bench) sustainedSingles(ctx context.Context, pool *pgxpool.Pool, dbURL string, be database.Backend, id string) error {
	clients, d := b.opt.singleClients, b.opt.singleFor
	now := time.Now().UTC()
	// Enough bodies for 40k events/s; the run stops early if they run out.
	n := int(d.Seconds() * 40_000)
	gen := streamGenerator(b.opt.seed+111, now, time.Hour, n)
	rng := rand.NewChaCha8(seedBytes(b.opt.seed, 1111))
	singles := make([]singleRequest, 0, n)
	for {
		evs := gen.Next(nil, 50_000)
		if len(evs) == 0 {
			break
		}
		for i := range evs {
			evs[i].EventID = uuid4(rng)
			singles = append(singles, singleRequest{"/proxy/usage/" + evs[i].ProxyID + "/record", workload.AppendJSON(nil, &evs[i], false)})
		}
	}
	svc, err := b.startService(ctx, dbURL, "single-"+string(be), "BACKEND="+string(be))
	if err != nil {
		return err
	}
	defer func() {
		_ = svc.stop()
		b.svc = nil
	}()
	tok, err := serviceToken()
	if err != nil {
		return err
	}
	step("(11) %s: single-event ingest, random uuid4 eventIds, %d concurrent clients for %s", be, clients, d)
	var before int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&before); err != nil {
		return err
	}
	rss := sampleRSS(svc.pid())
	start := b.cpu()
	lat, elapsed, err := b.runSingles(ctx, tok, clients, d, singles, rss)
	end := b.cpu()
	peak := rss.end()
	_, hwm := memory(svc.pid())
	if err != nil {
		return err
	}
	var after int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&after); err != nil {
		return err
	}
	if after-before != len(lat) {
		return fmt.Errorf("single ingest: %d acknowledged, %d stored", len(lat), after-before)
	}
	r := float64(len(lat)) / elapsed.Seconds()
	top := max(peak, hwm)
	b.add(result{id, fmt.Sprintf("%s: single-event ingest via API, random uuid4 eventIds, %d concurrent clients, durable acks; the service's peak RSS", be, clients),
		fmt.Sprintf("%s events/s, p50 %s, p99 %s (%s events in %.1f s); RSS peak **%s** (VmHWM %s, highest sampled VmRSS %s)",
			rate(r), ms(quantile(lat, 0.5)), ms(quantile(lat, 0.99)), count(len(lat)), elapsed.Seconds(), mb(top), mb(hwm), mb(peak)),
		"≥ 10,000 events/s, RSS < 150 MB", mark(r >= 10_000) + " rate, " + mark(top < 150<<20) + " RSS"})
	b.addEvidence(fmt.Sprintf("(11) single-event ingest on %s", be), "CPU: "+cpuSplit(start, end)+".")
	return nil
}
