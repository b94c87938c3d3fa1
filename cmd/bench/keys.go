package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/ingest"
	"proxyusage/internal/workload"
)

// keys is (13) on one backend of -backends: batch ingest with
// random uuid4 eventIds on an empty database, then again once keysSeeded
// remembered keys (random, received over the last 34 days) have been
// written straight into usage_event_keys; bytes per remembered key (table
// and indexes) and per raw event, and on TimescaleDB per event of chunks
// the columnstore policy compressed. Both runs start right after a
// CHECKPOINT, so each pays the full-page writes of the index pages it
// dirties first; a third run, straight after the second, shows the rate
// once those are mostly paid.
func (b *bench) keys(ctx context.Context, be database.Backend) error {
	id := func(letter string) string { return "13" + letter + "-" + short(be) }
	pool, dbURL, _, err := b.newDatabaseOn(ctx, "bench_keys_"+string(be), string(be))
	if err != nil {
		return err
	}
	defer pool.Close()
	now := time.Now().UTC()
	gen := workload.New(workload.Config{Seed: b.opt.seed + 9, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: now.Add(-24 * time.Hour), End: now.Add(-time.Minute), Events: 3 * b.opt.keysEvents, Prefix: "k"})
	if err := workload.SeedAccounts(ctx, pool, gen, now); err != nil {
		return err
	}
	step("(13) %s: generating 3 × %s events with random uuid4 eventIds", be, count(b.opt.keysEvents))
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], b.opt.seed+13)
	rng := rand.NewChaCha8(seed)
	var events []ingest.Event
	for {
		n := len(events)
		if events = gen.Next(events, 100_000); len(events) == n {
			break
		}
	}
	for i := range events {
		events[i].EventID = uuid4(rng)
	}
	third := len(events) / 3
	bodies := func(evs []ingest.Event) [][]byte {
		var out [][]byte
		for i := 0; i < len(evs); i += b.opt.batchSize {
			out = append(out, workload.AppendBatch(nil, evs[i:min(i+b.opt.batchSize, len(evs))]))
		}
		return out
	}
	first, second, last := bodies(events[:third]), bodies(events[third:2*third]), bodies(events[2*third:])

	svc, err := b.startService(ctx, dbURL, "keys-"+string(be), "BACKEND="+string(be))
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

	emptyRate, err := b.keysIngest(ctx, pool, tok, first, third, "empty database", true)
	if err != nil {
		return err
	}
	if err := b.seedKeys(ctx, pool); err != nil {
		return err
	}
	resetStatements(ctx, pool)
	seededRate, err := b.keysIngest(ctx, pool, tok, second, third, count(b.opt.keysSeeded)+" keys remembered, right after a checkpoint", true)
	if err != nil {
		return err
	}
	statements := topStatements(ctx, pool, 4)
	resetStatements(ctx, pool)
	// The same again straight after: most key-index pages were already
	// logged whole since the checkpoint, as in a steady state whose
	// checkpoint interval sees many claims per index page.
	laterRate, err := b.keysIngest(ctx, pool, tok, last, len(events)-2*third, count(b.opt.keysSeeded)+" keys remembered, continuing", false)
	if err != nil {
		return err
	}
	laterStatements := topStatements(ctx, pool, 4)
	plan, err := explainClaim(ctx, pool)
	if err != nil {
		return err
	}
	ratio := seededRate / emptyRate
	b.add(result{id("a"), fmt.Sprintf("%s: batch ingest with %s remembered keys (random uuid4 eventIds) vs. an empty database", be, count(b.opt.keysSeeded)),
		fmt.Sprintf("%s events/s vs. %s events/s = **%.0f %%**", rate(seededRate), rate(emptyRate), 100*ratio),
		"≥ 80 %", yes(ratio >= 0.8)})
	b.add(result{id("e"), fmt.Sprintf("%s: the same, continuing straight after (no checkpoint in between: the key-index pages' full-page images are mostly paid)", be),
		fmt.Sprintf("%s events/s = **%.0f %%** of the empty database's rate", rate(laterRate), 100*laterRate/emptyRate), "", ""})

	var keys, keyBytes, keyIndexBytes int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM usage_event_keys), pg_total_relation_size('usage_event_keys'), pg_indexes_size('usage_event_keys')`).
		Scan(&keys, &keyBytes, &keyIndexBytes); err != nil {
		return err
	}
	perKey := float64(keyBytes) / float64(keys)
	b.add(result{id("b"), string(be) + ": bytes per remembered idempotency key (table + indexes)",
		fmt.Sprintf("**%.0f bytes** (%s keys in %s, of which indexes %s)", perKey, count(int(keys)), mb(keyBytes), mb(keyIndexBytes)),
		"≤ 100 bytes", yes(perKey <= 100)})

	var stored, eventBytes int64
	sizeQ := `SELECT (SELECT count(*) FROM usage_events), pg_total_relation_size('usage_events')`
	if be == database.TimescaleDB {
		sizeQ = `SELECT (SELECT count(*) FROM usage_events), hypertable_size('usage_events')`
	}
	if err := pool.QueryRow(ctx, sizeQ).Scan(&stored, &eventBytes); err != nil {
		return err
	}
	b.add(result{id("c"), string(be) + ": bytes per raw event (table + indexes, uncompressed)",
		fmt.Sprintf("%.0f bytes (%s events in %s)", float64(eventBytes)/float64(stored), count(int(stored)), mb(eventBytes)), "", ""})
	if be == database.TimescaleDB {
		if err := b.compressedEventBytes(ctx, pool, rng, now, id("d")); err != nil {
			return err
		}
	}
	b.addEvidence("(13) "+string(be)+": ingest with remembered keys", "Server time per statement during the seeded run right after a checkpoint (`pg_stat_statements`):\n\n"+statements+
		"\nand during the run that continued straight after it:\n\n"+laterStatements+
		"\nA claim of 1,000 new random keys with the keys remembered, right after a CHECKPOINT (rolled back; `WAL` counts the full-page images, `FPI`):\n\n```\n"+plan+"\n```\n")
	return nil
}

// keysIngest posts bodies with the batch clients and returns the rate. It
// starts once the rollup worker has absorbed what came before (the first
// run's backlog would otherwise slow the second) and, with checkpoint,
// after a CHECKPOINT.
func (b *bench) keysIngest(ctx context.Context, pool *pgxpool.Pool, tok string, bodies [][]byte, total int, what string, checkpoint bool) (float64, error) {
	step("(13) batch ingest, %s: %s events, %d clients", what, count(total), b.opt.batchClients)
	_, err := watch(ctx, pool, 10*time.Minute)
	endProgress()
	if err != nil {
		return 0, err
	}
	if checkpoint {
		if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
			return 0, err
		}
	}
	var next, accepted, retries atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.opt.batchClients)
	t0 := time.Now()
	for range b.opt.batchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := newLeanConn(b.svc.url)
			if err != nil {
				errs <- err
				return
			}
			defer l.close()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(bodies) {
					return
				}
				a, err := post(l, "/proxy/usage/events", tok, bodies[i], http.StatusCreated, &retries)
				if err != nil {
					errs <- err
					return
				}
				accepted.Add(int64(a.Accepted))
			}
		}()
	}
	stop := b.ticker(func(el time.Duration) {
		progress("%s/%s events  %s events/s", count(int(accepted.Load())), count(total), rate(float64(accepted.Load())/el.Seconds()))
	})
	wg.Wait()
	elapsed := time.Since(t0)
	stop()
	endProgress()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	if int(accepted.Load()) != total {
		return 0, fmt.Errorf("keys ingest: %d accepted, want %d (random ids must all be new)", accepted.Load(), total)
	}
	return float64(total) / elapsed.Seconds(), nil
}

// seedKeys writes keysSeeded random keys straight into usage_event_keys,
// received over the last 34 days in order (as the service appends them),
// rebuilding the primary key afterwards rather than inserting into it.
func (b *bench) seedKeys(ctx context.Context, pool *pgxpool.Pool) error {
	step("(13) seeding %s remembered keys", count(b.opt.keysSeeded))
	if _, err := pool.Exec(ctx, `ALTER TABLE usage_event_keys DROP CONSTRAINT usage_event_keys_pkey`); err != nil {
		return err
	}
	const chunk = 1_000_000
	for done := 0; done < b.opt.keysSeeded; done += chunk {
		n := min(chunk, b.opt.keysSeeded-done)
		// Chunk i of k covers its slice of the 34 days, oldest first.
		if _, err := pool.Exec(ctx, `
			INSERT INTO usage_event_keys (key, received_at)
			SELECT gen_random_uuid(), now() - interval '34 days' * (1 - ($1 + i)::float8 / $2)
			  FROM generate_series(0, $3 - 1) i`, done, b.opt.keysSeeded, n); err != nil {
			return err
		}
		progress("%s keys", count(done+n))
	}
	endProgress()
	t0 := time.Now()
	if _, err := pool.Exec(ctx, `ALTER TABLE usage_event_keys ADD CONSTRAINT usage_event_keys_pkey PRIMARY KEY (key)`); err != nil {
		return err
	}
	fmt.Printf("  primary key rebuilt in %.0f s\n", time.Since(t0).Seconds())
	_, err := pool.Exec(ctx, `VACUUM ANALYZE usage_event_keys`)
	return err
}

// compressedEventBytes copies keysEvents events dated 3 to 10 days ago
// straight into usage_events, runs the columnstore policy's job (as its
// schedule would) and measures bytes per event of the chunks it compressed.
func (b *bench) compressedEventBytes(ctx context.Context, pool *pgxpool.Pool, rng *rand.ChaCha8, now time.Time, id string) error {
	step("(13) columnstore: %s events 3-10 days old, then the compression policy's job", count(b.opt.keysEvents))
	gen := workload.New(workload.Config{Seed: b.opt.seed + 99, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: now.Add(-10 * 24 * time.Hour), End: now.Add(-3 * 24 * time.Hour), Events: b.opt.keysEvents, Prefix: "c"})
	var events []ingest.Event
	for {
		n := len(events)
		if events = gen.Next(events, 100_000); len(events) == n {
			break
		}
	}
	for i := range events {
		events[i].EventID = uuid4(rng)
	}
	for i := 0; i < len(events); i += 100_000 {
		if _, err := workload.CopyEvents(ctx, pool, "usage_events", events[i:min(i+100_000, len(events))], now); err != nil {
			return err
		}
	}
	var job int
	if err := pool.QueryRow(ctx, `SELECT job_id FROM timescaledb_information.jobs
		WHERE hypertable_name = 'usage_events' AND proc_name IN ('policy_compression', 'policy_columnstore')`).Scan(&job); err != nil {
		return fmt.Errorf("compression policy: %w", err)
	}
	t0 := time.Now()
	if _, err := pool.Exec(ctx, `CALL run_job($1)`, job); err != nil {
		return err
	}
	took := time.Since(t0)
	var chunks int
	var before, after, n int64
	if err := pool.QueryRow(ctx, `
		SELECT count(*), coalesce(sum(before_compression_total_bytes), 0), coalesce(sum(after_compression_total_bytes), 0)
		  FROM chunk_compression_stats('usage_events') WHERE compression_status = 'Compressed'`).Scan(&chunks, &before, &after); err != nil {
		return err
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM usage_events WHERE time < $1`, now.Add(-3*24*time.Hour)).Scan(&n); err != nil {
		return err
	}
	if chunks == 0 || n == 0 {
		return fmt.Errorf("columnstore: the policy compressed %d chunks holding %d events", chunks, n)
	}
	per := float64(after) / float64(n)
	b.add(result{id, "timescaledb: bytes per raw event in chunks older than 2 days, compressed by the policy's job",
		fmt.Sprintf("**%.0f bytes** (%s events in %d chunks: %s before, %s after; job took %.1f s)", per, count(int(n)), chunks, mb(before), mb(after), took.Seconds()),
		"≤ 60 bytes", yes(per <= 60)})
	return nil
}

// explainClaim runs the writer's key claim for 1,000 new random keys right
// after a CHECKPOINT, under EXPLAIN (ANALYZE, BUFFERS, WAL), and rolls it
// back.
func explainClaim(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return "", err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF)
		INSERT INTO usage_event_keys (key, received_at) SELECT gen_random_uuid(), now() FROM generate_series(1, 1000)`)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n"), err
}
