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

// On TimescaleDB: usage_events is a hypertable with 1-day chunks, the
// daily rollups are continuous aggregates with real-time aggregation and
// refresh policies, old chunks are compressed, and raw events are retained
// for RAW_RETENTION.
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
	if n := env.Count(`SELECT count(*) FROM timescaledb_information.continuous_aggregates
		WHERE view_name IN ('usage_daily', 'usage_latency_daily_packed') AND NOT materialized_only`); n != 2 {
		t.Fatalf("%d real-time continuous aggregates, want 2", n)
	}
	// The intermediate level is materialized-only (see sql/0007).
	if n := env.Count(`SELECT count(*) FROM timescaledb_information.continuous_aggregates
		WHERE view_name = 'usage_latency_daily' AND materialized_only`); n != 1 {
		t.Fatal("usage_latency_daily is not materialized-only")
	}
	// The packed histograms are a continuous aggregate on top of another.
	if n := env.Count(`SELECT count(*) FROM _timescaledb_catalog.continuous_agg c
		JOIN _timescaledb_catalog.continuous_agg p ON p.mat_hypertable_id = c.parent_mat_hypertable_id
		WHERE c.user_view_name = 'usage_latency_daily_packed' AND p.user_view_name = 'usage_latency_daily'`); n != 1 {
		t.Fatal("usage_latency_daily_packed is not a hierarchical continuous aggregate over usage_latency_daily")
	}
	for proc, want := range map[string]int{"policy_refresh_continuous_aggregate": 3, "policy_compression": 1, "policy_retention": 1} {
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
}
