package http_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// Report totals are the caller's period totals whatever the grouping: a
// proxy with no events in the period still contributes the peak of a
// connection left open from the day before (rows list only proxies with
// events). Checked before and after the worker rolls the events up.
func TestReportTotalsPeakIndependentOfGrouping(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		alice := apptest.Token(t, "alice")
		env.MustRegister(alice, "pa")
		env.MustRegister(alice, "pb")

		today := time.Now().UTC().Truncate(24 * time.Hour)
		d := today.AddDate(0, 0, -5)
		at := func(t time.Time) string { return t.Format(time.RFC3339) }
		// A: opened at 20:00 the day before, never ended (closes at 20:00 on D).
		if r := env.Do("POST", "/proxy/usage/pa/record", alice, map[string]any{
			"eventType": "connection_start", "eventId": "a1", "timestamp": at(d.Add(-4 * time.Hour)),
			"eventData": map[string]any{"connectionId": "c1"},
		}); r.Status != 201 {
			t.Fatalf("record A: %d %s", r.Status, r.Body)
		}
		// B: traffic on D only.
		if r := env.Do("POST", "/proxy/usage/pb/record", alice, map[string]any{
			"eventType": "data_transfer", "eventId": "b1", "timestamp": at(d.Add(10 * time.Hour)),
			"eventData": map[string]any{"bytesSent": 100},
		}); r.Status != 201 {
			t.Fatalf("record B: %d %s", r.Status, r.Body)
		}

		day := d.Format("2006-01-02")
		check := func(stage string) {
			t.Helper()
			daily := env.Do("GET", "/proxy/usage/pa/metrics/"+day, alice, nil).JSON(t)["metrics"].(map[string]any)
			wantPeak := daily["peakConcurrentConnections"]
			if wantPeak != float64(1) {
				t.Fatalf("%s: A's daily peak on D = %v, want 1", stage, wantPeak)
			}
			for _, groupBy := range []string{"day", "proxy"} {
				r := env.Do("GET", fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s&groupBy=%s", day, day, groupBy), alice, nil)
				if r.Status != 200 {
					t.Fatalf("%s: report %s: %d %s", stage, groupBy, r.Status, r.Body)
				}
				m := r.JSON(t)
				totals := m["totals"].(map[string]any)
				if totals["peakConcurrentConnections"] != wantPeak {
					t.Errorf("%s: report groupBy=%s totals peak = %v, want %v", stage, groupBy, totals["peakConcurrentConnections"], wantPeak)
				}
				if groupBy == "proxy" {
					rows := m["rows"].([]any)
					if len(rows) != 1 || rows[0].(map[string]any)["proxyId"] != "pb" {
						t.Errorf("%s: groupBy=proxy rows = %v, want only pb (the proxy with events)", stage, rows)
					}
				}
			}
			agg := env.Do("GET", fmt.Sprintf("/proxy/usage/aggregation?periodStart=%s&periodEnd=%s", day, day), alice, nil).JSON(t)
			if got := agg["totals"].(map[string]any)["peakConcurrentConnections"]; got != wantPeak {
				t.Errorf("%s: aggregation peak = %v, want %v", stage, got, wantPeak)
			}
		}
		check("raw")
		for {
			stats, err := env.Main.Rollup.RunOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !stats.Full {
				break
			}
		}
		check("rolled up")
	})
}
