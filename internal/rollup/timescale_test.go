package rollup_test

import (
	"context"
	"testing"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
)

// On TimescaleDB: usage_events is a hypertable with 1-day chunks, old
// chunks are compressed, raw events are retained for RAW_RETENTION, and
// the daily rollups are the same tables as on plain PostgreSQL.
func TestTimescalePolicies(t *testing.T) {
	has := false
	for _, b := range pgtest.Backends(t) {
		has = has || b == database.TimescaleDB
	}
	if !has {
		t.Skip("TimescaleDB is not installed here")
	}
	env := apptest.Start(t, database.TimescaleDB, func(m *app.Main) { m.Config.RawRetention = 200 * 24 * time.Hour })
	ctx := context.Background()
	var interval time.Duration
	if err := env.DB.QueryRow(ctx, `SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'usage_events'`).Scan(&interval); err != nil {
		t.Fatal(err)
	}
	if interval != 24*time.Hour {
		t.Fatalf("chunk interval %v", interval)
	}
	// The rollups are tables folded from deltas on both backends: a
	// continuous aggregate's refresh re-reads all of a day's raw events.
	if n := env.Count(`SELECT count(*) FROM timescaledb_information.continuous_aggregates`); n != 0 {
		t.Fatalf("%d continuous aggregates, want none", n)
	}
	if n := env.Count(`SELECT count(*) FROM pg_class WHERE relname IN ('usage_daily', 'usage_latency_daily_packed') AND relkind = 'r'`); n != 2 {
		t.Fatalf("%d of the 2 rollup tables", n)
	}
	for proc, want := range map[string]int{"policy_refresh_continuous_aggregate": 0, "policy_compression": 1, "policy_retention": 1} {
		if n := env.Count(`SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = $1`, proc); n != want {
			t.Errorf("%d %s jobs, want %d", n, proc, want)
		}
	}
	// The worker applies RAW_RETENTION at start.
	deadline := time.Now().Add(10 * time.Second)
	for env.Count(`SELECT count(*) FROM timescaledb_information.jobs
		WHERE proc_name = 'policy_retention' AND config->>'drop_after' = '200 days'`) != 1 {
		if time.Now().After(deadline) {
			var cfg string
			_ = env.DB.QueryRow(ctx, `SELECT config::text FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'`).Scan(&cfg)
			t.Fatalf("retention policy not set to 200 days: %s", cfg)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Pairing reads no raw events (sql/0021_connection_log_events.sql):
	// no job forgets connection events apart from them.
	if n := env.Count(`SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'usage_prune_connection_events'`); n != 0 {
		t.Fatalf("%d connection-event retention jobs", n)
	}
}
