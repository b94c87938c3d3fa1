package database_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Migration 6 turns the row-per-entry invalidation logs into a row per
// flush: pending entries survive it, and its Down, unchanged.
func TestInvalidationLogMigrationKeepsPendingEntries(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			cfg, err := pgx.ParseConfig(pgtest.NewDB(t, b))
			if err != nil {
				t.Fatal(err)
			}
			cfg.RuntimeParams["proxyusage.backend"] = string(b)
			db := stdlib.OpenDB(*cfg)
			defer db.Close()
			p, err := database.NewProvider(db)
			if err != nil {
				t.Fatal(err)
			}
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
