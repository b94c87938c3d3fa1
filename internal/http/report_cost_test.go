package http_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// A year-long report of a user with 20,000 proxies, each with a connection
// still waiting for the worker, answers well inside READ_TIMEOUT with the
// exact peaks: the read's cost follows the days the pending connections
// cover, not pending connections × days (before, this one request spun for
// 20 s and more, and several at once took the service from every tenant).
func TestYearReportWithManyPendingConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 proxies")
	}
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		env := apptest.Start(t, b, apptest.NoWorker)
		ctx := context.Background()
		alice := apptest.Token(t, "alice")
		env.MustRegister(alice, "seed") // creates the user
		const proxies = 20000
		if _, err := env.DB.Exec(ctx, `INSERT INTO proxies (id, user_id) SELECT 'p' || i, 'alice' FROM generate_series(1, $1) i`, proxies); err != nil {
			t.Fatal(err)
		}
		today := time.Now().UTC().Truncate(24 * time.Hour)
		opened := today.Add(-4 * time.Hour) // 20:00 yesterday: open on two days
		events := make([]map[string]any, 0, 10000)
		for i := 1; i <= proxies; i++ {
			events = append(events, map[string]any{
				"proxyId": fmt.Sprintf("p%d", i), "eventType": "connection_start", "eventId": "s",
				"timestamp": opened.Format(time.RFC3339), "eventData": map[string]any{"connectionId": "c"},
			})
			if len(events) == cap(events) {
				if r := env.Do("POST", "/proxy/usage/events", alice, map[string]any{"events": events}); r.Status != 201 {
					t.Fatalf("batch: %d %.200s", r.Status, r.Body)
				}
				events = events[:0]
			}
		}
		if n := env.Count(`SELECT count(*) FROM usage_connection_invalidations`); n == 0 {
			t.Fatal("the connections are not pending: the test would not exercise the pending path")
		}
		start, end := today.AddDate(0, 0, -364).Format("2006-01-02"), today.Format("2006-01-02")
		began := time.Now()
		r := env.Do("GET", fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s&groupBy=day", start, end), alice, nil)
		if r.Status != 200 {
			t.Fatalf("year report after %v: %d %.300s", time.Since(began), r.Status, r.Body)
		}
		var rep struct {
			Rows []struct {
				Date string `json:"date"`
				Peak int    `json:"peakConcurrentConnections"`
			} `json:"rows"`
			Totals struct {
				Peak int `json:"peakConcurrentConnections"`
			} `json:"totals"`
		}
		r.Decode(t, &rep)
		// Each proxy has one connection open on yesterday and today: the
		// highest single-proxy daily peak is 1 on those days, 0 elsewhere.
		open := map[string]bool{today.AddDate(0, 0, -1).Format("2006-01-02"): true, end: true}
		if len(rep.Rows) != 365 || rep.Totals.Peak != 1 {
			t.Fatalf("rows %d, totals peak %d; want 365 rows and peak 1", len(rep.Rows), rep.Totals.Peak)
		}
		for _, row := range rep.Rows {
			if want := map[bool]int{true: 1}[open[row.Date]]; row.Peak != want {
				t.Errorf("%s: peak %d, want %d", row.Date, row.Peak, want)
			}
		}
		t.Logf("%s: year report over %d proxies with pending connections answered in %v", b, proxies, time.Since(began))
	})
}
