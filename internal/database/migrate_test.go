package database_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
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
