package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/auth"
	"proxyusage/internal/ingest"
	"proxyusage/internal/workload"
)

// ingestPhases runs (1) raw COPY, (2) batch ingest, (3) single-event
// ingest and samples (5) the service's RSS during 2 and 3.
func (b *bench) ingestPhases(ctx context.Context) error {
	pool, dbURL, err := b.newDatabase(ctx, "bench_ingest")
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	gen := workload.New(workload.Config{Seed: b.opt.seed, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: now.Add(-24 * time.Hour), End: now.Add(-time.Minute), Events: b.opt.ingestEvents, Prefix: "i"})
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	step("generating %s events (%d users, %d proxies, last 24 h)", count(b.opt.ingestEvents), b.opt.users, b.opt.proxies)
	events := make([]ingest.Event, 0, b.opt.ingestEvents)
	for {
		n := len(events)
		events = gen.Next(events, 100_000)
		if len(events) == n {
			break
		}
		progress("%s events", count(len(events)))
	}
	endProgress()

	if err := b.rawCopy(ctx, pool, events); err != nil {
		return err
	}

	step("encoding %s batch bodies of %d events", count((len(events)+b.opt.batchSize-1)/b.opt.batchSize), b.opt.batchSize)
	var bodies [][]byte
	var size int
	for i := 0; i < len(events); i += b.opt.batchSize {
		body := workload.AppendBatch(nil, events[i:min(i+b.opt.batchSize, len(events))])
		size += len(body)
		bodies = append(bodies, body)
	}
	fmt.Printf("  %s of JSON, %.0f bytes per event\n", mb(int64(size)), float64(size)/float64(len(events)))

	svc, err := b.startService(ctx, dbURL, "ingest")
	if err != nil {
		return err
	}
	rss := sampleRSS(svc.pid())
	tok, err := auth.Mint([]byte(secret), "bench-ingest", []string{auth.RoleService}, 24*time.Hour, "", "")
	if err != nil {
		return err
	}
	// Single events first, on a fresh database; the worker then absorbs
	// their invalidations before the batch phase starts.
	if err := b.singleIngest(ctx, pool, tok, rss, now); err != nil {
		return err
	}
	if err := b.waitDrained(ctx, pool, 5*time.Minute); err != nil {
		return err
	}
	if err := b.batchIngest(ctx, pool, bodies, len(events), tok, rss); err != nil {
		return err
	}
	b.rssPeak = rss.end()
	_, b.hwm = memory(svc.pid())
	peak := max(b.rssPeak, b.hwm)
	b.add(result{"5", "service RSS peak during 2 and 3", fmt.Sprintf("%s (VmHWM %s, highest sampled VmRSS %s)", mb(peak), mb(b.hwm), mb(b.rssPeak)),
		"< 150 MB", yes(peak < 150<<20)})
	step("stopping the service")
	err = svc.stop()
	b.svc = nil
	return err
}

// waitDrained waits, up to limit, for the service's rollup worker to empty
// both invalidation logs.
func (b *bench) waitDrained(ctx context.Context, pool *pgxpool.Pool, limit time.Duration) error {
	step("waiting for the rollup worker to absorb the backlog")
	d0, c0, err := pending(ctx, pool)
	if err != nil {
		return err
	}
	took, err := watch(ctx, pool, limit)
	endProgress()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	left := ""
	if err != nil {
		left = " (the rest was still pending when it started)"
	}
	b.addEvidence("rollup backlog between (3) and (2)", fmt.Sprintf("The worker had %s proxy-days and %s connections to roll up after (3); it took %.0f s before (2) started%s.",
		count(d0), count(c0), took.Seconds(), left))
	return nil
}

// rawCopy is (1): binary COPY of the generated rows into a logged table
// with usage_events' columns and indexes, in one transaction.
func (b *bench) rawCopy(ctx context.Context, pool *pgxpool.Pool, events []ingest.Event) error {
	step("(1) raw binary COPY of %s rows into bench_copy (LIKE usage_events INCLUDING ALL)", count(len(events)))
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_copy (LIKE usage_events INCLUDING ALL)`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return err
	}
	start := b.cpu()
	t0 := time.Now()
	const chunk = 100_000
	for i := 0; i < len(events); i += chunk {
		part := events[i:min(i+chunk, len(events))]
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := workload.CopyEvents(ctx, tx, "bench_copy", part, time.Now())
			return err
		})
		if err != nil {
			return err
		}
		done := i + len(part)
		progress("%s rows  %s rows/s", count(done), rate(float64(done)/time.Since(t0).Seconds()))
	}
	elapsed := time.Since(t0)
	end := b.cpu()
	endProgress()
	b.copyRate = float64(len(events)) / elapsed.Seconds()

	// For reference: the same rows in two concurrent streams, one per core.
	if _, err := pool.Exec(ctx, `TRUNCATE bench_copy`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return err
	}
	t1 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * chunk; i < len(events); i += 2 * chunk {
				part := events[i:min(i+chunk, len(events))]
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					_, err := workload.CopyEvents(ctx, tx, "bench_copy", part, time.Now())
					return err
				}); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b.copyRate2 = float64(len(events)) / time.Since(t1).Seconds()
	b.add(result{"1", "raw binary COPY (pgx CopyFrom) of the same rows into a logged table like usage_events (same columns and indexes), one stream, 100k rows per transaction",
		fmt.Sprintf("%s events/s (%s rows in %.1f s); for reference, two concurrent streams: %s events/s", rate(b.copyRate), count(len(events)), elapsed.Seconds(), rate(b.copyRate2)),
		"baseline", ""})
	b.addEvidence("(1) raw COPY", "CPU of the single stream: "+cpuSplit(start, end)+".")
	if _, err := pool.Exec(ctx, `DROP TABLE bench_copy`); err != nil {
		return err
	}
	_, err := pool.Exec(ctx, `CHECKPOINT`)
	return err
}

type ingestAnswer struct {
	Accepted   int  `json:"accepted"`
	Duplicates int  `json:"duplicates"`
	Duplicate  bool `json:"duplicate"`
}

// post sends one JSON body on a lean keep-alive connection, retrying on
// 503 (the service shedding load; eventIds make the retry safe). It
// returns the decoded answer.
func post(l *leanConn, path, tok string, body []byte, want int, retries *atomic.Int64) (ingestAnswer, error) {
	for {
		status, data, err := l.post(path, tok, body)
		if err != nil {
			return ingestAnswer{}, err
		}
		if status == http.StatusServiceUnavailable {
			retries.Add(1)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if status != want {
			return ingestAnswer{}, fmt.Errorf("POST %s: %d %s", path, status, data)
		}
		var a ingestAnswer
		if err := json.Unmarshal(data, &a); err != nil {
			return ingestAnswer{}, err
		}
		return a, nil
	}
}

func profileSeconds(d time.Duration) int {
	return max(1, min(10, int(d.Seconds())-1))
}

// batchIngest is (2).
func (b *bench) batchIngest(ctx context.Context, pool *pgxpool.Pool, bodies [][]byte, total int, tok string, rss *rssSampler) error {
	step("(2) batch ingest through the API: %s events, %d per request, %d concurrent clients", count(total), b.opt.batchSize, b.opt.batchClients)
	var before int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&before); err != nil {
		return err
	}
	resetStatements(ctx, pool)
	m0 := b.scrape()
	expected := time.Duration(float64(total)/100_000*float64(time.Second)) + time.Second
	prof := b.profileService("batch-ingest", profileSeconds(expected))
	start := b.cpu()
	t0 := time.Now()
	var next, accepted atomic.Int64
	var retries atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range b.opt.batchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := newLeanConn(b.svc.url)
			if err != nil {
				once.Do(func() { firstErr = err; cancel() })
				return
			}
			defer l.close()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(bodies) || cctx.Err() != nil {
					return
				}
				a, err := post(l, "/proxy/usage/events", tok, bodies[i], http.StatusCreated, &retries)
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				accepted.Add(int64(a.Accepted + a.Duplicates))
			}
		}()
	}
	stop := b.ticker(func(el time.Duration) {
		n := accepted.Load()
		cur, _ := rss.current()
		progress("%s/%s events  %s events/s  RSS %s", count(int(n)), count(total), rate(float64(n)/el.Seconds()), mb(cur))
	})
	wg.Wait()
	elapsed := time.Since(t0)
	stop()
	end := b.cpu()
	endProgress()
	if firstErr != nil {
		return firstErr
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&stored); err != nil {
		return err
	}
	if stored -= before; int(accepted.Load()) != total || stored != total {
		return fmt.Errorf("batch ingest: %d acknowledged, %d stored, want %d", accepted.Load(), stored, total)
	}
	r := float64(total) / elapsed.Seconds()
	ratio := r / b.copyRate
	b.add(result{"2", fmt.Sprintf("batch ingest via API, %d events/request, %d clients", b.opt.batchSize, b.opt.batchClients),
		fmt.Sprintf("%s events/s = **%.0f %%** of (1) (%.0f %% of two COPY streams; %.1f s, %d retries after 503)", rate(r), 100*ratio, 100*r/b.copyRate2, elapsed.Seconds(), retries.Load()),
		"≥ 100,000 events/s and ≥ 50 %", mark(r >= 100_000) + " rate, " + mark(ratio >= 0.5) + " ratio"})
	top, perr := prof.wait()
	ev := "CPU: " + cpuSplit(start, end) + "." + serverSide(m0, b.scrape(), "/proxy/usage/events") +
		"\n\nServer time per statement (`pg_stat_statements`):\n\n" + topStatements(ctx, pool, 6)
	if perr == nil {
		ev += "\nService CPU profile (`go tool pprof -top`, " + b.opt.profDir + "/batch-ingest.cpu.pprof):\n\n```\n" + top + "\n```\n"
	} else {
		ev += "\n(profile: " + perr.Error() + ")\n"
	}
	b.addEvidence("(2) batch ingest", ev)
	return nil
}

// singleIngest is (3).
func (b *bench) singleIngest(ctx context.Context, pool *pgxpool.Pool, tok string, rss *rssSampler, now time.Time) error {
	clients := b.opt.singleClients
	step("(3) single-event ingest: %d concurrent clients for %s", clients, b.opt.singleFor)
	// Enough bodies for 40k events/s; the run stops early if they run out.
	n := int(b.opt.singleFor.Seconds() * 40_000)
	gen := workload.New(workload.Config{Seed: b.opt.seed + 7, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: now.Add(-time.Hour), End: now.Add(-time.Minute), Events: n, Prefix: "s"})
	singles := make([]singleRequest, 0, n)
	for {
		evs := gen.Next(nil, 50_000)
		if len(evs) == 0 {
			break
		}
		for i := range evs {
			singles = append(singles, singleRequest{"/proxy/usage/" + evs[i].ProxyID + "/record", workload.AppendJSON(nil, &evs[i], false)})
		}
	}
	resetStatements(ctx, pool)
	var before int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&before); err != nil {
		return err
	}
	m0 := b.scrape()
	prof := b.profileService("single-ingest", profileSeconds(b.opt.singleFor))
	start := b.cpu()
	all, elapsed, err := b.runSingles(ctx, tok, clients, b.opt.singleFor, singles, rss)
	end := b.cpu()
	if err != nil {
		return err
	}
	var after int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events`).Scan(&after); err != nil {
		return err
	}
	if after-before != len(all) {
		return fmt.Errorf("single ingest: %d acknowledged, %d stored", len(all), after-before)
	}
	r := float64(len(all)) / elapsed.Seconds()
	p50, p99 := quantile(all, 0.5), quantile(all, 0.99)
	b.add(result{"3", fmt.Sprintf("single-event ingest via API, %d concurrent clients, durable acks", clients),
		fmt.Sprintf("%s events/s, p50 %s, p99 %s (%s events in %.1f s)", rate(r), ms(p50), ms(p99), count(len(all)), elapsed.Seconds()),
		"≥ 10,000 events/s", yes(r >= 10_000)})
	top, perr := prof.wait()
	ev := "CPU: " + cpuSplit(start, end) + "." + serverSide(m0, b.scrape(), "/proxy/usage/{proxyId}/record")
	ev += "\n\nServer time per statement (`pg_stat_statements`):\n\n" + topStatements(ctx, pool, 6)
	if perr == nil {
		ev += "\nService CPU profile (`go tool pprof -top`, " + b.opt.profDir + "/single-ingest.cpu.pprof):\n\n```\n" + top + "\n```\n"
	}
	b.addEvidence("(3) single-event ingest", ev)
	return nil
}

// singleRequest is one request of the single-event endpoint.
type singleRequest struct {
	path string
	body []byte
}

// runSingles posts singles from clients concurrent lean connections until
// d passes or they run out, and returns each request's latency and the
// time taken.
func (b *bench) runSingles(ctx context.Context, tok string, clients int, d time.Duration, singles []singleRequest, rss *rssSampler) ([]time.Duration, time.Duration, error) {
	t0 := time.Now()
	deadline := t0.Add(d)
	var next, done, retries atomic.Int64
	lat := make([][]time.Duration, clients)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := newLeanConn(b.svc.url)
			if err != nil {
				once.Do(func() { firstErr = err; cancel() })
				return
			}
			defer l.close()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= len(singles) || cctx.Err() != nil {
					return
				}
				s := singles[i]
				t := time.Now()
				if _, err := post(l, s.path, tok, s.body, http.StatusCreated, &retries); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				lat[c] = append(lat[c], time.Since(t))
				done.Add(1)
			}
		}()
	}
	stop := b.ticker(func(el time.Duration) {
		cur, _ := rss.current()
		progress("%s events  %s events/s  RSS %s", count(int(done.Load())), rate(float64(done.Load())/el.Seconds()), mb(cur))
	})
	wg.Wait()
	elapsed := time.Since(t0)
	stop()
	endProgress()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, elapsed, nil
}

// scrape reads the service's /metrics as series → value.
func (b *bench) scrape() map[string]float64 {
	out := map[string]float64{}
	resp, err := b.client.Get(b.svc.url + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(data), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscanf(line[i+1:], "%g", &v); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// serverSide summarises, between two scrapes, how the service saw a phase:
// its own handling time of route and the group commits.
func serverSide(a, z map[string]float64, route string) string {
	d := func(k string) float64 { return z[k] - a[k] }
	var out []string
	key := `{method="POST",route="` + route + `"}`
	if n := d("proxyusage_http_request_duration_seconds_count" + key); n > 0 {
		out = append(out, fmt.Sprintf("the service handled %.0f requests in %.2f ms on average (its own timer, route %s)",
			n, 1000*d("proxyusage_http_request_duration_seconds_sum"+key)/n, route))
	}
	if n := d("proxyusage_ingest_flush_duration_seconds_count"); n > 0 {
		out = append(out, fmt.Sprintf("%.0f group commits of %.1f events and %.2f ms on average",
			n, d("proxyusage_ingest_flush_events_sum")/n, 1000*d("proxyusage_ingest_flush_duration_seconds_sum")/n))
	}
	if len(out) == 0 {
		return ""
	}
	return " Server side: " + strings.Join(out, "; ") + "."
}

// ticker calls f with the elapsed time every 500 ms until the returned
// stop is called.
func (b *bench) ticker(f func(elapsed time.Duration)) (stop func()) {
	t0 := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				f(time.Since(t0))
				return
			case <-t.C:
				f(time.Since(t0))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
