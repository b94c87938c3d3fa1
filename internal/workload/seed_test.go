package workload

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Bulk pairing followed by the worker leaves exactly the rollups the
// worker alone produces from the same seeded events.
func TestPairAllMatchesWorker(t *testing.T) {
	for _, b := range pgtest.Backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := context.Background()
			seed := func(bulk bool) *pgxpool.Pool {
				pool, err := database.Connect(ctx, pgtest.NewDB(t, b), 4)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
				g := New(Config{Seed: 5, Users: 3, Proxies: 12, Start: now.Add(-5 * 24 * time.Hour), End: now, Events: 6000})
				if err := SeedAccounts(ctx, pool, g, now); err != nil {
					t.Fatal(err)
				}
				if _, err := Seed(ctx, pool, g, 1000, nil); err != nil {
					t.Fatal(err)
				}
				if bulk {
					if err := PairAll(ctx, pool, 24*time.Hour, nil); err != nil {
						t.Fatal(err)
					}
				}
				w, err := rollup.NewWorker(rollup.WorkerConfig{Pool: pool, Backend: b, Metrics: telemetry.New(),
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConnectionAge: 24 * time.Hour, BatchSize: 100_000})
				if err != nil {
					t.Fatal(err)
				}
				for {
					st, err := w.RunOnce(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if len(st.Days)+len(st.Connections) == 0 {
						return pool
					}
				}
			}
			a, z := seed(false), seed(true)
			for _, q := range []string{
				`SELECT proxy_id, connection_id, start_time, end_time, paired FROM usage_connections`,
				`SELECT proxy_id, day, peak FROM usage_daily_peak WHERE peak > 0`,
				`SELECT proxy_id, bucket, event_count, bytes_sent FROM usage_daily`,
			} {
				x, y := dump(t, a, q), dump(t, z, q)
				if len(x) == 0 || len(x) != len(y) {
					t.Fatalf("%s: %d rows by the worker, %d after bulk pairing", q, len(x), len(y))
				}
				for i := range x {
					if x[i] != y[i] {
						t.Fatalf("%s: row %d: %s by the worker, %s after bulk pairing", q, i, x[i], y[i])
					}
				}
			}
		})
	}
}

func dump(t *testing.T, pool *pgxpool.Pool, q string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT r::text FROM ("+q+") r ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
