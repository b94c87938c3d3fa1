package database_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/ingest"
	"proxyusage/internal/ingest/store"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// migrator returns a migrated database of backend b, a connection to it set
// up as the migrator's, and the migration provider.
func migrator(t *testing.T, b database.Backend) (string, *sql.DB, *goose.Provider) {
	t.Helper()
	url := pgtest.NewDB(t, b)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["proxyusage.backend"] = string(b)
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	p, err := database.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if b == database.TimescaleDB {
		// The tests migrate down and up by hand: no job may run meanwhile
		// (see PauseTimescaleJobs). The database is dropped afterwards, so
		// the jobs are not resumed.
		if _, err := database.PauseTimescaleJobs(context.Background(), db, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	return url, db, p
}

// Migration 6 turns the row-per-entry invalidation logs into a row per
// flush: pending entries survive it, and its Down, unchanged.
func TestInvalidationLogMigrationKeepsPendingEntries(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 5); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `
				INSERT INTO usage_invalidations (proxy_id, day) VALUES ('a', '2026-01-01'), ('b', '2026-01-02'), ('a', '2026-01-03');
				INSERT INTO usage_connection_invalidations (proxy_id, connection_id) VALUES ('a', 'c1'), ('b', 'c2')`); err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpByOne(ctx); err != nil {
				t.Fatal(err)
			}
			var days, conns string
			if err := db.QueryRowContext(ctx, `SELECT
				(SELECT string_agg(format('%s,%s', u.p, u.d), ' ' ORDER BY l.id, u.n) FROM usage_invalidations l, unnest(l.proxy_ids, l.days) WITH ORDINALITY AS u(p, d, n)),
				(SELECT string_agg(format('%s,%s', u.p, u.c), ' ' ORDER BY l.id, u.n) FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids) WITH ORDINALITY AS u(p, c, n))`).
				Scan(&days, &conns); err != nil {
				t.Fatal(err)
			}
			if days != "a,2026-01-01 b,2026-01-02 a,2026-01-03" || conns != "a,c1 b,c2" {
				t.Fatalf("after up: days %q, connections %q", days, conns)
			}
			if _, err := p.DownTo(ctx, 5); err != nil {
				t.Fatal(err)
			}
			if err := db.QueryRowContext(ctx, `SELECT
				(SELECT string_agg(format('%s,%s', proxy_id, day), ' ' ORDER BY id) FROM usage_invalidations),
				(SELECT string_agg(format('%s,%s', proxy_id, connection_id), ' ' ORDER BY id) FROM usage_connection_invalidations)`).
				Scan(&days, &conns); err != nil {
				t.Fatal(err)
			}
			if days != "a,2026-01-01 b,2026-01-02 a,2026-01-03" || conns != "a,c1 b,c2" {
				t.Fatalf("after down: days %q, connections %q", days, conns)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Migration 7 packs the latency histograms one row per proxy-day. On plain
// PostgreSQL it moves the rows into the packed table (usage_latency_daily
// stays, as a view); on TimescaleDB it logs every rolled-up proxy-day so
// reads recompute them until the worker has filled the new aggregate.
func TestPackedLatencyMigrationKeepsHistograms(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			url, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 6); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `
				INSERT INTO usage_events (time, proxy_id, event_type, latency_us, latency_bucket) VALUES
				  ('2026-03-01 10:00Z', 'a', 'data_transfer', 1000, 350), ('2026-03-01 11:00Z', 'a', 'data_transfer', 1000, 350),
				  ('2026-03-01 12:00Z', 'a', 'data_transfer', 10, 118), ('2026-03-02 12:00Z', 'b', 'data_transfer', 10, 118)`); err != nil {
				t.Fatal(err)
			}
			if b == database.TimescaleDB {
				conn, err := pgx.Connect(ctx, url)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range []string{"usage_daily", "usage_latency_daily"} {
					if _, err := conn.Exec(ctx, `CALL refresh_continuous_aggregate('`+v+`', NULL, NULL)`, pgx.QueryExecModeSimpleProtocol); err != nil {
						t.Fatal(err)
					}
				}
				conn.Close(ctx)
			} else if _, err := db.ExecContext(ctx, `
				INSERT INTO usage_daily (proxy_id, bucket, event_count, connection_count, success_count, error_count, duration_count, latency_count)
				VALUES ('a', '2026-03-01', 3, 0, 0, 0, 0, 3), ('b', '2026-03-02', 1, 0, 0, 0, 0, 1);
				INSERT INTO usage_latency_daily VALUES ('a', '2026-03-01', 350, 2), ('a', '2026-03-01', 118, 1), ('b', '2026-03-02', 118, 1)`); err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpByOne(ctx); err != nil {
				t.Fatal(err)
			}
			// The unpacked view keeps its rows on both backends.
			var rows string
			if err := db.QueryRowContext(ctx, `SELECT string_agg(format('%s %s %s %s', proxy_id, (bucket AT TIME ZONE 'UTC')::date, latency_bucket, samples), ', '
				ORDER BY proxy_id, bucket, latency_bucket) FROM usage_latency_daily`).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if rows != "a 2026-03-01 118 1, a 2026-03-01 350 2, b 2026-03-02 118 1" {
				t.Fatalf("usage_latency_daily after the migration: %q", rows)
			}
			var packed, logged string
			if err := db.QueryRowContext(ctx, `SELECT
				coalesce((SELECT string_agg(format('%s %s %s %s', proxy_id, (bucket AT TIME ZONE 'UTC')::date, latency_buckets, samples), ', ' ORDER BY proxy_id)
				   FROM usage_latency_daily_packed WHERE bucket < '2026-04-01'), ''),
				coalesce((SELECT string_agg(format('%s %s', u.p, u.d), ', ' ORDER BY u.p)
				   FROM usage_invalidations, unnest(proxy_ids, days) AS u(p, d)), '')`).Scan(&packed, &logged); err != nil {
				t.Fatal(err)
			}
			want := "a 2026-03-01 {118,350} {1,2}, b 2026-03-02 {118} {1}"
			if b == database.TimescaleDB {
				// Real-time aggregation answers the view before any refresh;
				// the reader waits for the worker through the log.
				if packed != want || logged != "a 2026-03-01, b 2026-03-02" {
					t.Fatalf("packed %q, logged %q", packed, logged)
				}
			} else if packed != want || logged != "" {
				t.Fatalf("packed %q, logged %q", packed, logged)
			}
		})
	}
}

// Migration 11 replaces the text keys with compact ones: a retry of a key
// remembered before it is still a duplicate after it, a new id is not, and
// a key older than the window is carried over for the pruner to forget.
func TestCompactKeysMigrationKeepsDedup(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			url, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 10); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `
				INSERT INTO users (id) VALUES ('alice');
				INSERT INTO proxies (id, user_id) VALUES ('a1', 'alice'), ('a2', 'alice');
				INSERT INTO usage_event_keys (proxy_id, event_id, received_at)
				SELECT 'a' || (i % 2 + 1), 'old-' || i, now() - interval '1 day' FROM generate_series(1, 1000) i;
				INSERT INTO usage_event_keys (proxy_id, event_id, received_at) VALUES ('a1', 'expired', now() - interval '40 days')`); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatal(err)
			}
			var keys int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM usage_event_keys`).Scan(&keys); err != nil || keys != 1001 {
				t.Fatalf("%d keys after the migration (%v), want 1001", keys, err)
			}

			pool, err := database.Connect(ctx, url, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			w, err := store.NewWriter(ctx, store.WriterConfig{PoolConfig: pool.Config(), Metrics: telemetry.New(), Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			w.Start(ctx)
			defer w.Stop()
			now := time.Now().UTC()
			var retry []ingest.Event
			for i := 1; i <= 1000; i++ { // a large flush: claim, then COPY
				retry = append(retry, ingest.Event{ProxyID: fmt.Sprintf("a%d", i%2+1), EventID: fmt.Sprintf("old-%d", i), Type: ingest.DataTransfer, Time: now})
			}
			alice := auth.Principal{UserID: "alice"}
			for _, evs := range [][]ingest.Event{retry, retry[:10]} { // and a small one
				if acc, _, err := w.WriteAs(ctx, alice, evs, true); err != nil || acc != 0 {
					t.Fatalf("retry of %d remembered keys stored %d (%v)", len(evs), acc, err)
				}
			}
			// old-1 was remembered for a2: on a1 it is a new key.
			fresh := []ingest.Event{{ProxyID: "a1", EventID: "old-1", Type: ingest.DataTransfer, Time: now}, {ProxyID: "a1", EventID: "new", Type: ingest.DataTransfer, Time: now}}
			if acc, _, err := w.WriteAs(ctx, alice, fresh, true); err != nil || acc != 2 {
				t.Fatalf("new keys: stored %d (%v), want 2", acc, err)
			}
			pruner, err := store.NewKeyPruner(store.KeyPrunerConfig{Pool: pool, Logger: log, Window: 35 * 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := pruner.RunOnce(ctx); err != nil || n != 1 {
				t.Fatalf("pruned %d (%v), want the expired key", n, err)
			}
			if acc, _, err := w.WriteAs(ctx, alice, []ingest.Event{{ProxyID: "a1", EventID: "expired", Type: ingest.DataTransfer, Time: now}}, false); err != nil || acc != 1 {
				t.Fatalf("a forgotten key: stored %d (%v), want 1", acc, err)
			}
		})
	}
}

// Migration 10 replaces the day-invalidation log by rollup deltas and, on
// TimescaleDB, the continuous aggregates by tables: the rollups it leaves
// equal the recompute from raw events, including days that were still
// logged (stale or missing rows), and the peaks of logged days are
// recomputed from the stored intervals.
func TestRollupDeltaMigrationRecomputesLoggedDays(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			url, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 9); err != nil {
				t.Fatal(err)
			}
			exec := execer(t, db)
			if b == database.TimescaleDB {
				// Migration 11's Down re-adds the columnstore policy, whose
				// job the scheduler starts at once; it deadlocked with this
				// migration's drop of the aggregates. An upgrade does not
				// create jobs just before it; keep the scheduler out here.
				exec(`SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs WHERE job_id >= 1000`)
			}
			exec(`INSERT INTO usage_events (time, proxy_id, event_type, bytes_sent, duration_us, latency_us, latency_bucket) VALUES
				('2026-03-01 10:00Z', 'a', 'data_transfer', 5, NULL, 1000, 350), ('2026-03-01 11:00Z', 'a', 'connection_end', 0, 7, NULL, NULL),
				('2026-03-02 12:00Z', 'b', 'error', 1, NULL, 10, 118)`)
			// Rolled up as the previous version's worker left them.
			if b == database.TimescaleDB {
				conn, err := pgx.Connect(ctx, url)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range []string{"usage_daily", "usage_latency_daily", "usage_latency_daily_packed"} {
					if _, err := conn.Exec(ctx, `CALL refresh_continuous_aggregate('`+v+`', NULL, NULL)`, pgx.QueryExecModeSimpleProtocol); err != nil {
						t.Fatal(err)
					}
				}
				conn.Close(ctx)
			} else {
				exec(`INSERT INTO usage_daily VALUES
					('a', '2026-03-01', 2, 0, 1, 0, 5, 0, 7, 1, 1000, 1, 1000, '2026-03-01 10:00Z', '2026-03-01 11:00Z'),
					('b', '2026-03-02', 1, 0, 0, 1, 1, 0, NULL, 0, 10, 1, 10, '2026-03-02 12:00Z', '2026-03-02 12:00Z');
					INSERT INTO usage_latency_daily_packed VALUES ('a', '2026-03-01', '{350}', '{1}'), ('b', '2026-03-02', '{118}', '{1}')`)
			}
			// Then events the worker has not absorbed: a late one for a
			// rolled-up day, one for a new day, and two connections whose
			// intervals are stored but whose days' peaks are not.
			exec(`INSERT INTO usage_events (time, proxy_id, event_type, bytes_sent, latency_us, latency_bucket) VALUES
				('2026-03-01 09:00Z', 'a', 'data_transfer', 3, 10, 118), ('2026-03-03 09:00Z', 'b', 'data_transfer', 4, NULL, NULL);
				INSERT INTO usage_connections VALUES ('a', 'c1', '2026-03-01 22:00Z', '2026-03-02 02:00Z', true),
				  ('a', 'c2', '2026-03-01 23:00Z', '2026-03-02 01:00Z', true);
				INSERT INTO usage_invalidations (proxy_ids, days) VALUES ('{a,b}', '{2026-03-01,2026-03-03}'), ('{a}', '{2026-03-02}')`)
			if _, err := p.UpByOne(ctx); err != nil {
				t.Fatal(err)
			}
			bucket := "time_bucket(interval '1 day', time)"
			if b == database.Postgres {
				bucket = "date_bin(interval '1 day', time, timestamptz '2000-01-01')"
			}
			for _, pair := range [][2]string{
				{`SELECT * FROM usage_daily`, `SELECT proxy_id, ` + bucket + `, count(*),
					count(*) FILTER (WHERE event_type = 'connection_start'), count(*) FILTER (WHERE event_type = 'connection_end'),
					count(*) FILTER (WHERE event_type = 'error'), sum(bytes_sent), sum(bytes_received),
					sum(duration_us) FILTER (WHERE event_type = 'connection_end'), count(duration_us) FILTER (WHERE event_type = 'connection_end'),
					sum(latency_us), count(latency_us), max(latency_us), min(time), max(time) FROM usage_events GROUP BY 1, 2`},
				{`SELECT * FROM usage_latency_daily_packed`, `SELECT proxy_id, bucket, array_agg(latency_bucket ORDER BY latency_bucket), array_agg(samples ORDER BY latency_bucket)
					FROM (SELECT proxy_id, ` + bucket + ` AS bucket, latency_bucket, count(*) AS samples FROM usage_events
					       WHERE latency_bucket IS NOT NULL GROUP BY 1, 2, 3) h GROUP BY 1, 2`},
			} {
				var differ int
				if err := db.QueryRowContext(ctx, `SELECT count(*) FROM ((`+pair[0]+` EXCEPT ALL `+pair[1]+`) UNION ALL (`+pair[1]+` EXCEPT ALL `+pair[0]+`)) d`).Scan(&differ); err != nil {
					t.Fatal(err)
				}
				if differ != 0 {
					t.Errorf("%d rows of %q differ from the recompute", differ, pair[0])
				}
			}
			var peaks string
			if err := db.QueryRowContext(ctx, `SELECT string_agg(format('%s %s %s', proxy_id, day, peak), ', ' ORDER BY proxy_id, day) FROM usage_daily_peak`).Scan(&peaks); err != nil {
				t.Fatal(err)
			}
			if peaks != "a 2026-03-01 2, a 2026-03-02 2, b 2026-03-03 0" {
				t.Fatalf("peaks after the migration: %q", peaks)
			}
			var logs int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_class WHERE relname = 'usage_invalidations'`).Scan(&logs); err != nil || logs != 0 {
				t.Fatalf("usage_invalidations still there (%v)", err)
			}
		})
	}
}

// Migration 14 splits each pending delta row by the owners of its
// proxies: every entry and histogram entry survives with its values, each
// new row holds one user's proxies, histogram positions stay ascending
// (the filter function's binary search needs it), and Down then Up works.
func TestDeltasByUserMigrationKeepsPendingDeltas(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 13); err != nil {
				t.Fatal(err)
			}
			exec := execer(t, db)
			count := func(q string) int { t.Helper(); return countRows(t, db, q) }
			exec(`INSERT INTO users (id) VALUES ('u1'), ('u2');
				INSERT INTO proxies (id, user_id) VALUES ('a', 'u1'), ('b', 'u2'), ('c', 'u1');
				INSERT INTO usage_rollup_deltas (proxy_ids, days, event_counts, connection_counts, success_counts, error_counts,
				  bytes_sent, bytes_received, duration_sums_us, duration_counts, latency_sums_us, latency_counts, latency_max_us,
				  first_event_at, last_event_at, latency_entries, latency_buckets, latency_samples) VALUES
				('{a,a,b,c}', '{2026-03-01,2026-03-02,2026-03-01,2026-03-01}', '{1,2,3,4}', '{0,1,0,2}', '{0,0,1,0}', '{1,0,0,0}',
				 '{10,20,30,40}', '{1,2,3,4}', '{NULL,5,6,NULL}', '{0,1,1,0}', '{100,NULL,300,400}', '{1,0,1,2}', '{100,NULL,300,350}',
				 '{2026-03-01 01:00Z,2026-03-02 01:00Z,2026-03-01 02:00Z,2026-03-01 03:00Z}', '{2026-03-01 01:00Z,2026-03-02 05:00Z,2026-03-01 02:00Z,2026-03-01 04:00Z}',
				 '{1,3,4,4}', '{7,9,3,8}', '{1,1,1,1}'),
				('{b}', '{2026-03-03}', '{5}', '{0}', '{0}', '{0}', '{50}', '{5}', '{NULL}', '{0}', '{NULL}', '{0}', '{NULL}',
				 '{2026-03-03 01:00Z}', '{2026-03-03 01:00Z}', '{}', '{}', '{}')`)
			const entries = `SELECT u.* FROM usage_rollup_deltas l, unnest(l.proxy_ids, l.days, l.event_counts, l.connection_counts, l.success_counts,
				l.error_counts, l.bytes_sent, l.bytes_received, l.duration_sums_us, l.duration_counts, l.latency_sums_us, l.latency_counts,
				l.latency_max_us, l.first_event_at, l.last_event_at) AS u(proxy_id, day, events, conns, succ, errs, sent, received,
				dur_sum, dur_count, lat_sum, lat_count, lat_max, first_at, last_at)`
			const hist = `SELECT h.* FROM usage_rollup_deltas l,
				usage_rollup_delta_histograms(l.proxy_ids, l.days, l.latency_entries, l.latency_buckets, l.latency_samples) h`
			exec(`CREATE TABLE before_entries AS ` + entries + `; CREATE TABLE before_hist AS ` + hist)
			if _, err := p.UpByOne(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(`SELECT count(*) FROM before_entries`); n != 5 {
				t.Fatalf("%d entries before", n)
			}
			for _, pair := range [][2]string{{entries, `SELECT * FROM before_entries`}, {hist, `SELECT * FROM before_hist`}} {
				if n := count(differing(pair[0], pair[1])); n != 0 {
					t.Errorf("%d entries differ after the migration (%.40s…)", n, pair[0])
				}
			}
			if n := count(`SELECT count(*) FROM usage_rollup_deltas`); n != 3 {
				t.Errorf("%d rows, want 3 (the first row split by its two users)", n)
			}
			if n := count(`SELECT count(*) FROM usage_rollup_deltas l, unnest(l.proxy_ids) AS u(proxy_id) JOIN proxies p ON p.id = u.proxy_id
				WHERE p.user_id <> l.user_id`); n != 0 {
				t.Errorf("%d entries in a row of another user", n)
			}
			if n := count(`SELECT count(*) FROM usage_rollup_deltas l
				WHERE l.latency_entries <> ARRAY(SELECT e FROM unnest(l.latency_entries) e ORDER BY e)
				   OR EXISTS (SELECT 1 FROM unnest(l.latency_entries) e WHERE e < 1 OR e > cardinality(l.proxy_ids))`); n != 0 {
				t.Errorf("%d rows with histogram positions out of order or range", n)
			}
			if _, err := p.Down(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpByOne(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(differing(entries, `SELECT * FROM before_entries`)); n != 0 {
				t.Errorf("%d entries differ after Down and Up", n)
			}
		})
	}
}

// Migration 15 splits each pending connection log row by owner: every
// (proxy, connection) entry survives, each row holds one user's proxies.
func TestConnectionLogByUserMigrationKeepsPendingConnections(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 14); err != nil {
				t.Fatal(err)
			}
			count := func(q string) int { t.Helper(); return countRows(t, db, q) }
			if _, err := db.ExecContext(ctx, `INSERT INTO users (id) VALUES ('u1'), ('u2');
				INSERT INTO proxies (id, user_id) VALUES ('a', 'u1'), ('b', 'u2'), ('c', 'u1');
				INSERT INTO usage_connection_invalidations (proxy_ids, connection_ids) VALUES
				  ('{a,b,c,a}', '{x,y,z,w}'), ('{b}', '{v}')`); err != nil {
				t.Fatal(err)
			}
			const entries = `SELECT u.proxy_id, u.connection_id FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids) AS u(proxy_id, connection_id)`
			const want = `SELECT * FROM (VALUES ('a', 'x'), ('b', 'y'), ('c', 'z'), ('a', 'w'), ('b', 'v')) v(proxy_id, connection_id)`
			upDownUp(t, p, nil, func(step string) {
				if n := count(differing(entries, want)); n != 0 {
					t.Errorf("after %s: %d entries differ", step, n)
				}
			})
			if n := count(`SELECT count(*) FROM usage_connection_invalidations`); n != 3 {
				t.Errorf("%d rows, want 3 (the first split by its two users)", n)
			}
			if n := count(`SELECT count(*) FROM usage_connection_invalidations l, unnest(l.proxy_ids) AS u(proxy_id)
				JOIN proxies p ON p.id = u.proxy_id WHERE p.user_id <> l.user_id`); n != 0 {
				t.Errorf("%d entries in a row of another user", n)
			}
		})
	}
}

// upDownUp applies the next migration and runs check("up"), reverts it
// and runs afterDown (when set), then applies it again and runs
// check("down and up"): a migration keeps the data both ways.
func upDownUp(t *testing.T, p *goose.Provider, afterDown func(), check func(step string)) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.UpByOne(ctx); err != nil {
		t.Fatal(err)
	}
	check("up")
	if _, err := p.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if afterDown != nil {
		afterDown()
	}
	if _, err := p.UpByOne(ctx); err != nil {
		t.Fatal(err)
	}
	check("down and up")
}

// execer returns a function that runs a statement on db or fails t.
func execer(t *testing.T, db *sql.DB) func(q string) {
	return func(q string) {
		t.Helper()
		if _, err := db.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// keyed returns the rows of q, two columns, as a map from the first to
// the second.
func keyed[V any](t *testing.T, db *sql.DB, q string) map[string]V {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]V{}
	for rows.Next() {
		var k string
		var v V
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// countRows returns the count query q answers.
func countRows(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// differing is a count query of the rows in one of queries a and b and
// not the other, duplicates counted.
func differing(a, b string) string {
	return `SELECT count(*) FROM ((` + a + ` EXCEPT ALL ` + b + `) UNION ALL (` + b + ` EXCEPT ALL ` + a + `)) d`
}

// Migration 17 stores each packed latency histogram as one bytea: every
// bucket survives it and its Down, the view usage_latency_daily answers
// the same rows, and the bytes are the documented encoding.
func TestHistogramBytesMigrationKeepsHistograms(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 16); err != nil {
				t.Fatal(err)
			}
			count := func(q string) int { t.Helper(); return countRows(t, db, q) }
			if _, err := db.ExecContext(ctx, `INSERT INTO usage_latency_daily_packed (proxy_id, bucket, latency_buckets, samples) VALUES
				('a', '2026-03-01', '{0,118,350,812}', '{2,1,4000000000,1}'), ('a', '2026-03-02', '{5}', '{7}'), ('b', '2026-03-01', '{}', '{}')`); err != nil {
				t.Fatal(err)
			}
			const view = `SELECT proxy_id, bucket, latency_bucket, samples FROM usage_latency_daily`
			const want = `SELECT v.p, v.d::timestamptz, v.b::smallint, v.s::bigint FROM (VALUES
				('a', '2026-03-01', 0, 2), ('a', '2026-03-01', 118, 1), ('a', '2026-03-01', 350, 4000000000), ('a', '2026-03-01', 812, 1),
				('a', '2026-03-02', 5, 7)) v(p, d, b, s)`
			upDownUp(t, p, func() {
				if n := count(`SELECT count(*) FROM usage_latency_daily_packed WHERE cardinality(samples) <> cardinality(latency_buckets)`); n != 0 {
					t.Fatalf("after down: %d rows with unequal arrays", n)
				}
			}, func(step string) {
				if n := count(differing(view, want)); n != 0 {
					t.Errorf("after %s: %d histogram entries differ", step, n)
				}
			})
			var hist []byte
			if err := db.QueryRowContext(ctx, `SELECT histogram FROM usage_latency_daily_packed WHERE proxy_id = 'a' AND bucket = '2026-03-02'`).Scan(&hist); err != nil {
				t.Fatal(err)
			}
			if wantBytes := []byte{0, 5, 0, 0, 0, 0, 0, 0, 0, 7}; !bytes.Equal(hist, wantBytes) {
				t.Fatalf("stored %x, want %x", hist, wantBytes)
			}
			if n := count(`SELECT count(*) FROM usage_latency_daily_packed WHERE proxy_id = 'b' AND histogram = ''::bytea`); n != 1 {
				t.Fatalf("the empty histogram: %d rows", n)
			}
		})
	}
}

// Migration 18 moves pairing's reads to usage_connection_events: every
// start and end stored before it is carried over, nothing else, and its
// Down restores the index it replaced.
func TestConnectionEventsMigrationCarriesEvents(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 17); err != nil {
				t.Fatal(err)
			}
			count := func(q string) int { t.Helper(); return countRows(t, db, q) }
			if _, err := db.ExecContext(ctx, `INSERT INTO usage_events (time, proxy_id, event_type, connection_id) VALUES
				('2026-03-01 10:00Z', 'a', 'connection_start', 'c1'), ('2026-03-01 11:00Z', 'a', 'connection_end', 'c1'),
				('2026-03-01 11:00Z', 'a', 'connection_end', 'c1'), ('2026-03-02 00:00Z', 'b', 'connection_start', 'c1'),
				('2026-03-01 12:00Z', 'a', 'data_transfer', NULL), ('2026-03-01 12:00Z', 'a', 'error', NULL)`); err != nil {
				t.Fatal(err)
			}
			const carried = `SELECT proxy_id, connection_id, time, is_start FROM usage_connection_events`
			const want = `SELECT v.p, v.c, v.t::timestamptz, v.s FROM (VALUES
				('a', 'c1', '2026-03-01 10:00Z', true), ('a', 'c1', '2026-03-01 11:00Z', false), ('a', 'c1', '2026-03-01 11:00Z', false),
				('b', 'c1', '2026-03-02 00:00Z', true)) v(p, c, t, s)`
			upDownUp(t, p, func() {
				if n := count(`SELECT count(*) FROM pg_indexes WHERE indexname = 'usage_events_connection_idx'`); n != 1 {
					t.Fatalf("after down: %d usage_events_connection_idx", n)
				}
			}, func(step string) {
				if n := count(differing(carried, want)); n != 0 {
					t.Errorf("after %s: %d connection events differ", step, n)
				}
			})
		})
	}
}

// Migration 19 adds an hour level over the peak slots: each hour is its
// slots' running values from the hour's start (computed here slot by
// slot), in UTC whatever the session's time zone, and the Down drops it.
func TestPeakHoursMigrationSumsSlots(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 18); err != nil {
				t.Fatal(err)
			}
			// A half-hour offset: a local hour is not a UTC hour.
			var name string
			if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&name); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, fmt.Sprintf(`ALTER DATABASE %q SET timezone = 'Asia/Kolkata'`, name)); err != nil {
				t.Fatal(err)
			}
			db.SetMaxIdleConns(0) // later statements on new sessions, in that zone
			type slot struct {
				proxyID  string
				start    string
				net, top int
			}
			slots := []slot{
				{"a", "2026-03-01 10:00Z", 2, 2}, {"a", "2026-03-01 10:05Z", -3, 0}, {"a", "2026-03-01 10:55Z", 1, 1},
				{"a", "2026-03-01 11:30Z", -1, 0}, {"a", "2026-03-01 23:55Z", 4, 5}, {"a", "2026-03-02 00:00Z", -2, -1},
				{"b", "2026-03-01 10:00Z", 1, 1}, {"b", "2026-03-01 10:25Z", 2, 3}, {"b", "2026-03-01 10:30Z", 5, 6},
			}
			type hour struct {
				proxyID string
				start   time.Time
			}
			type state struct{ net, top int }
			want := map[hour]state{}
			for _, s := range slots {
				if _, err := db.ExecContext(ctx, `INSERT INTO usage_peak_slots (proxy_id, slot_start, net, top) VALUES ($1, $2, $3, $4)`,
					s.proxyID, s.start, s.net, s.top); err != nil {
					t.Fatal(err)
				}
				at, err := time.Parse("2006-01-02 15:04Z07", s.start)
				if err != nil {
					t.Fatal(err)
				}
				h := hour{s.proxyID, at.UTC().Truncate(time.Hour)}
				if w, ok := want[h]; ok {
					want[h] = state{w.net + s.net, max(w.top, w.net+s.top)}
				} else {
					want[h] = state{s.net, s.top}
				}
			}
			check := func(step string) {
				rows, err := db.QueryContext(ctx, `SELECT proxy_id, hour_start, net, top FROM usage_peak_hours`)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				got := map[hour]state{}
				for rows.Next() {
					var h hour
					var s state
					if err := rows.Scan(&h.proxyID, &h.start, &s.net, &s.top); err != nil {
						t.Fatal(err)
					}
					h.start = h.start.UTC()
					got[h] = s
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Errorf("after %s: %d hours, want %d: %v", step, len(got), len(want), got)
				}
				for h, w := range want {
					if got[h] != w {
						t.Errorf("after %s: %s %s: %+v, want %+v", step, h.proxyID, h.start.Format(time.RFC3339), got[h], w)
					}
				}
			}
			upDownUp(t, p, func() {
				if n := countRows(t, db, `SELECT count(*) FROM pg_tables WHERE tablename = 'usage_peak_hours'`); n != 0 {
					t.Fatalf("after down: usage_peak_hours still there")
				}
			}, check)
		})
	}
}

// Migration 20 gives each peak slot its edges and drops the peak state
// (the worker refills it from the stored intervals); its Down does the
// same without the column.
func TestPeakSlotEdgesMigrationDropsState(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 19); err != nil {
				t.Fatal(err)
			}
			fill := func(withEdges bool) {
				t.Helper()
				slot := `INSERT INTO usage_peak_slots (proxy_id, slot_start, net, top) VALUES ('a', '2026-03-01 10:00Z', 1, 1)`
				if withEdges {
					slot = `INSERT INTO usage_peak_slots (proxy_id, slot_start, net, top, edges) VALUES ('a', '2026-03-01 10:00Z', 1, 1, '\x0000000000000001'::bytea || '\x01'::bytea)`
				}
				for _, q := range []string{slot,
					`INSERT INTO usage_peak_hours (proxy_id, hour_start, net, top) VALUES ('a', '2026-03-01 10:00Z', 1, 1)`,
					`INSERT INTO usage_peak_days (proxy_id, day, open_before, open_at) VALUES ('a', '2026-03-01', 0, 0)`} {
					if _, err := db.ExecContext(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
			}
			fill(false)
			state := `SELECT (SELECT count(*) FROM usage_peak_slots) + (SELECT count(*) FROM usage_peak_hours) + (SELECT count(*) FROM usage_peak_days)`
			column := `SELECT count(*) FROM information_schema.columns WHERE table_name = 'usage_peak_slots' AND column_name = 'edges'`
			upDownUp(t, p, func() {
				if n := countRows(t, db, column); n != 0 {
					t.Fatalf("after down: edges column still there")
				}
				fill(false)
			}, func(step string) {
				if n := countRows(t, db, state); n != 0 {
					t.Errorf("after %s: %d rows of peak state kept", step, n)
				}
				if n := countRows(t, db, column); n != 1 {
					t.Errorf("after %s: no edges column", step)
				}
				fill(true)
				if _, err := db.ExecContext(ctx, `DELETE FROM usage_peak_slots; DELETE FROM usage_peak_hours; DELETE FROM usage_peak_days`); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// Migration 21 moves the connection events into the connection log and
// keeps unmatched ends in usage_connections: a settled connection's
// events beyond its intervals become its unmatched ends, a waiting one's
// (or one holding a start no interval has) become log entries of its
// owner, a waiting one with nothing new leaves the log; its Down brings
// back the events from usage_events. The worker then pairs every
// connection as pairing all of its events does.
func TestConnectionLogEventsMigrationKeepsEveryEvent(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			url, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 20); err != nil {
				t.Fatal(err)
			}
			exec := execer(t, db)
			// Raw events as (proxy, connection, time, start), in both tables.
			const events = `(VALUES
				('a', 'c1', '2026-03-01 10:00Z', true), ('a', 'c1', '2026-03-01 11:00Z', false), ('a', 'c1', '2026-03-01 11:00Z', false),
				('a', 'c2', '2026-03-01 09:00Z', false),
				('a', 'c3', '2026-03-01 14:00Z', true), ('a', 'c3', '2026-03-01 15:00Z', false),
				('a', 'c4', '2026-03-01 16:00Z', true),
				('b', 'c1', '2026-03-01 12:00Z', true), ('b', 'c1', '2026-03-01 13:00Z', false), ('b', 'c1', '2026-03-01 08:00Z', false)
			) v(p, c, t, s)`
			exec(`INSERT INTO users (id) VALUES ('u'), ('v');
				INSERT INTO proxies (id, user_id) VALUES ('a', 'u'), ('b', 'v');
				INSERT INTO usage_events (time, proxy_id, event_type, connection_id)
				SELECT v.t::timestamptz, v.p, CASE WHEN v.s THEN 'connection_start' ELSE 'connection_end' END, v.c FROM ` + events + `;
				INSERT INTO usage_connection_events SELECT v.p, v.c, v.t::timestamptz, v.s FROM ` + events + `;
				-- a/c1, a/c3 settled (c1's second end unmatched), b/c1 paired
				-- before its end arrived and waiting, as is a/c3.
				INSERT INTO usage_connections VALUES
				  ('a', 'c1', '2026-03-01 10:00Z', '2026-03-01 11:00Z', true), ('a', 'c3', '2026-03-01 14:00Z', '2026-03-01 15:00Z', true),
				  ('b', 'c1', '2026-03-01 12:00Z', '2026-03-01 18:00Z', false);
				INSERT INTO usage_connection_invalidations (user_id, proxy_ids, connection_ids, logged_at) VALUES
				  ('v', '{b}', '{c1}', '2026-03-01 20:00Z'), ('u', '{a}', '{c3}', '2026-03-01 20:05Z')`)
			const stored = `SELECT proxy_id, connection_id, start_time, end_time, paired FROM usage_connections`
			const logged = `SELECT l.user_id, u.p, u.c, u.t, u.s, l.logged_at
				FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids, l.times, l.is_starts) AS u(p, c, t, s)`
			rows := func(values string) string {
				return `SELECT v.p, v.c, v.s::timestamptz, v.e::timestamptz, v.paired FROM (VALUES ` + values + `) v(p, c, s, e, paired)`
			}
			wantStored := rows(`('a', 'c1', '2026-03-01 10:00Z', '2026-03-01 11:00Z', true), ('a', 'c1', NULL, '2026-03-01 11:00Z', false),
				('a', 'c2', NULL, '2026-03-01 09:00Z', false), ('a', 'c3', '2026-03-01 14:00Z', '2026-03-01 15:00Z', true),
				('b', 'c1', '2026-03-01 12:00Z', '2026-03-01 18:00Z', false)`)
			const wantLogged = `SELECT v.u, v.p, v.c, v.t::timestamptz, v.s, '2026-03-01 20:00Z'::timestamptz FROM (VALUES
				('v', 'b', 'c1', '2026-03-01 13:00Z', false), ('v', 'b', 'c1', '2026-03-01 08:00Z', false),
				('u', 'a', 'c4', '2026-03-01 16:00Z', true)) v(u, p, c, t, s)`
			upDownUp(t, p, func() {
				if n := countRows(t, db, `SELECT count(*) FROM usage_connections WHERE start_time IS NULL`); n != 0 {
					t.Fatalf("after down: %d unmatched ends kept", n)
				}
				if n := countRows(t, db, differing(`SELECT proxy_id, connection_id, time, is_start FROM usage_connection_events`,
					`SELECT v.p, v.c, v.t::timestamptz, v.s FROM `+events)); n != 0 {
					t.Fatalf("after down: %d connection events differ from the raw events", n)
				}
			}, func(step string) {
				if n := countRows(t, db, differing(stored, wantStored)); n != 0 {
					t.Errorf("after %s: %d stored rows differ", step, n)
				}
				if n := countRows(t, db, differing(logged, wantLogged)); n != 0 {
					t.Errorf("after %s: %d log entries differ", step, n)
				}
				if n := countRows(t, db, `SELECT count(*) FROM information_schema.tables WHERE table_name = 'usage_connection_events'`); n != 0 {
					t.Errorf("after %s: usage_connection_events kept", step)
				}
			})

			// Today's worker, on the schema it expects.
			if _, err := p.Up(ctx); err != nil {
				t.Fatal(err)
			}
			pool, err := pgxpool.New(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			w, err := rollup.NewWorker(rollup.WorkerConfig{Pool: pool, Backend: b, Metrics: telemetry.New(),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConnectionAge: 6 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			for {
				s, err := w.RunOnce(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(s.Days)+len(s.Connections) == 0 {
					break
				}
			}
			paired := rows(`('a', 'c1', '2026-03-01 10:00Z', '2026-03-01 11:00Z', true), ('a', 'c1', NULL, '2026-03-01 11:00Z', false),
				('a', 'c2', NULL, '2026-03-01 09:00Z', false), ('a', 'c3', '2026-03-01 14:00Z', '2026-03-01 15:00Z', true),
				('a', 'c4', '2026-03-01 16:00Z', '2026-03-01 22:00Z', false),
				('b', 'c1', '2026-03-01 12:00Z', '2026-03-01 13:00Z', true), ('b', 'c1', NULL, '2026-03-01 08:00Z', false)`)
			if n := countRows(t, db, differing(stored, paired)); n != 0 {
				t.Errorf("after the worker: %d stored rows differ from pairing every event", n)
			}
		})
	}
}

// Migration 22 bounds each proxy's interval lengths: the existing
// intervals' longest, then a trigger that grows the bound for every
// statement storing intervals (inserts, COPY, updates) and never shrinks
// it; its Down drops both.
func TestConnectionBoundsMigrationBoundsEveryInterval(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			url, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 21); err != nil {
				t.Fatal(err)
			}
			exec := execer(t, db)
			// a: 1 h and a paired connection of 2 days 3 µs; b: only an
			// unmatched end (no interval, no bound).
			exec(`DELETE FROM usage_connections;
				INSERT INTO usage_connections (proxy_id, connection_id, start_time, end_time, paired) VALUES
				('a', 'c1', '2026-03-01 10:00Z', '2026-03-01 11:00Z', true),
				('a', 'c2', '2026-03-01 00:00Z', '2026-03-03 00:00:00.000003Z', true),
				('b', 'c1', NULL, '2026-03-01 09:00Z', false)`)
			expect := func(step string, want map[string]int64) {
				t.Helper()
				got := keyed[int64](t, db, `SELECT proxy_id, longest_us FROM usage_connection_bounds`)
				if len(got) != len(want) {
					t.Errorf("after %s: bounds %v, want %v", step, got, want)
				}
				for id, us := range want {
					if got[id] != us {
						t.Errorf("after %s: %s bound %d µs, want %d", step, id, got[id], us)
					}
				}
			}
			const twoDays = int64(48*time.Hour/time.Microsecond) + 3
			upDownUp(t, p, func() {
				if n := countRows(t, db, `SELECT count(*) FROM pg_tables WHERE tablename = 'usage_connection_bounds'`); n != 0 {
					t.Fatalf("after down: usage_connection_bounds still there")
				}
				exec(`INSERT INTO usage_connections (proxy_id, connection_id, start_time, end_time, paired) VALUES
					('c', 'c1', '2026-03-01 10:00Z', '2026-03-01 10:00:01Z', true)`)
			}, func(step string) {
				want := map[string]int64{"a": twoDays}
				if step != "up" {
					want["c"] = int64(time.Second / time.Microsecond)
				}
				expect(step, want)
			})

			// The trigger: a shorter interval keeps the bound, a longer one
			// (stored by COPY, as the worker does) or an update grows it.
			exec(`INSERT INTO usage_connections (proxy_id, connection_id, start_time, end_time, paired) VALUES
				('a', 'c3', '2026-03-05 10:00Z', '2026-03-05 10:30Z', true)`)
			pool, err := pgxpool.New(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
			if _, err := pool.CopyFrom(ctx, pgx.Identifier{"usage_connections"}, []string{"proxy_id", "connection_id", "start_time", "end_time", "paired"},
				pgx.CopyFromRows([][]any{
					{"b", "c2", start, start.Add(90 * time.Minute), true},
					{"b", "c3", start, start.Add(30 * time.Minute), true},
					{"d", "c1", nil, start, false},
				})); err != nil {
				t.Fatal(err)
			}
			expect("inserts", map[string]int64{"a": twoDays, "b": int64(90 * time.Minute / time.Microsecond), "c": int64(time.Second / time.Microsecond)})
			exec(`UPDATE usage_connections SET end_time = end_time + interval '3 days' WHERE proxy_id = 'c'`)
			exec(`DELETE FROM usage_connections WHERE proxy_id = 'a' AND connection_id = 'c2'`)
			expect("update and delete", map[string]int64{"a": twoDays, "b": int64(90 * time.Minute / time.Microsecond),
				"c": int64((72*time.Hour + time.Second) / time.Microsecond)})
		})
	}
}

// Migration 23 packs each slot's edges into 4-byte words (twice the
// offset from the slot's start in µs, plus one for a start); its Down
// restores the 9-byte form exactly.
func TestPackedSlotEdgesMigrationKeepsEdges(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			_, db, p := migrator(t, b)
			if _, err := p.DownTo(ctx, 22); err != nil {
				t.Fatal(err)
			}
			type edge struct {
				at    time.Time
				start bool
			}
			slot := time.Date(2026, 3, 1, 23, 55, 0, 0, time.UTC)
			last := slot.Add(5*time.Minute - time.Microsecond)
			slots := map[string][]edge{ // proxy → the edges of its slot at 23:55
				"a": {{slot, false}, {slot, true}, {slot.Add(1234567 * time.Microsecond), true}, {last, false}, {last, true}},
				"b": {{slot.Add(time.Minute), false}},
			}
			old := map[string][]byte{}
			packed := map[string][]byte{}
			for id, es := range slots {
				for _, e := range es {
					word := uint32(2 * e.at.Sub(slot).Microseconds())
					delta := byte(0xff)
					if e.start {
						word, delta = word+1, 1
					}
					old[id] = append(binary.BigEndian.AppendUint64(old[id], uint64(e.at.UnixMicro())), delta)
					packed[id] = binary.BigEndian.AppendUint32(packed[id], word)
				}
			}
			fill := func() {
				t.Helper()
				for id, b := range old {
					if _, err := db.ExecContext(ctx, `INSERT INTO usage_peak_slots (proxy_id, slot_start, net, top, edges) VALUES ($1, $2, 0, 0, $3)`,
						id, slot, b); err != nil {
						t.Fatal(err)
					}
				}
			}
			same := func(step string, got, want map[string][]byte) {
				t.Helper()
				if len(got) != len(want) {
					t.Errorf("after %s: %d slots, want %d", step, len(got), len(want))
				}
				for id, w := range want {
					if !bytes.Equal(got[id], w) {
						t.Errorf("after %s: slot of %s holds %x, want %x", step, id, got[id], w)
					}
				}
			}
			fill()
			upDownUp(t, p, func() {
				same("down", keyed[[]byte](t, db, `SELECT proxy_id, edges FROM usage_peak_slots`), old)
			}, func(step string) {
				same(step, keyed[[]byte](t, db, `SELECT proxy_id, packed_edges FROM usage_peak_slots`), packed)
			})
		})
	}
}
