package http_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// Today's latency histogram survives a rollup pass that also absorbs a
// late backlog spread over the past weeks: today's p95 is read from the
// rolled-up histograms and must count every sample (the packed histograms
// are merged with each run's deltas; on TimescaleDB they used to be a
// hierarchical continuous aggregate that left today's bucket stale).
func TestTodayLatencyAfterLateBacklog(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		alice := apptest.Token(t, "alice")
		rng := rand.New(rand.NewPCG(19, 2))
		now := time.Now().UTC()
		today := now.Truncate(24 * time.Hour)

		const oldProxies, fresh = 10, 20
		for i := range oldProxies {
			env.MustRegister(alice, fmt.Sprintf("old-%d", i))
		}
		for i := range fresh {
			env.MustRegister(alice, fmt.Sprintf("fresh-%d", i))
		}
		// The backlog: events over the last 20 days, some of them today,
		// recorded one batch after another.
		var batch []map[string]any
		flush := func() {
			if len(batch) == 0 {
				return
			}
			if r := env.Do("POST", "/proxy/usage/events", alice, map[string]any{"events": batch}); r.Status != 201 && r.Status != 200 {
				t.Fatalf("batch: %d %s", r.Status, r.Body)
			}
			batch = batch[:0]
		}
		drain := func() {
			for {
				stats, err := env.Main.Rollup.RunOnce(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if !stats.Full {
					return
				}
			}
		}
		for i := range 3000 {
			at := now.Add(-time.Duration(rng.Int64N(int64(20 * 24 * time.Hour))))
			batch = append(batch, map[string]any{
				"proxyId": fmt.Sprintf("old-%d", rng.IntN(oldProxies)), "eventType": "data_transfer",
				"eventId": fmt.Sprintf("bl-%d", i), "timestamp": at.Format(time.RFC3339Nano),
				"eventData": map[string]any{"bytesSent": 10, "latencyMs": 1 + rng.Float64()*500},
			})
			if len(batch) == 25 {
				flush()
			}
			if i == 1500 {
				// The worker has absorbed part of the backlog when the
				// rest arrives, as it does under steady ingest.
				flush()
				drain()
			}
		}
		flush()
		// Then one event today on each fresh proxy.
		for i := range fresh {
			r := env.Do("POST", fmt.Sprintf("/proxy/usage/fresh-%d/record", i), alice, map[string]any{
				"eventType": "data_transfer", "eventId": "t", "timestamp": now.Add(-time.Second).Format(time.RFC3339Nano),
				"eventData": map[string]any{"bytesSent": 1, "latencyMs": 98.375},
			})
			if r.Status != 201 {
				t.Fatalf("record: %d %s", r.Status, r.Body)
			}
		}
		drain()
		if n := env.Count(`SELECT count(*) FROM usage_rollup_deltas`); n != 0 {
			t.Fatalf("%d delta rows left after the worker drained the log", n)
		}
		day := today.Format("2006-01-02")
		for i := range fresh {
			m := env.Do("GET", fmt.Sprintf("/proxy/usage/fresh-%d/metrics/%s", i, day), alice, nil).JSON(t)["metrics"].(map[string]any)
			p95, ok := m["p95LatencyMs"].(float64)
			if !ok || math.Abs(p95-98.375) > 98.375*0.05 {
				t.Errorf("fresh-%d: today's p95 = %v, want 98.375 ± 5 %% (eventCount %v)", i, m["p95LatencyMs"], m["eventCount"])
			}
		}
		// Every proxy-day's histogram holds as many samples as it has
		// latency samples (the packed relation read by the service).
		if n := env.Count(`SELECT count(*) FROM usage_daily d
			LEFT JOIN (SELECT proxy_id, bucket, (SELECT sum(e.samples) FROM usage_histogram_entries(histogram) e) AS n FROM usage_latency_daily_packed) p USING (proxy_id, bucket)
			WHERE d.latency_count > 0 AND p.n IS DISTINCT FROM d.latency_count`); n != 0 {
			t.Errorf("%d proxy-days whose packed histogram misses samples", n)
		}
	})
}
