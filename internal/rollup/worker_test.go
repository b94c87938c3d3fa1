package rollup_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/rollup"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func drain(t *testing.T, env *apptest.Env) rollup.RunStats {
	t.Helper()
	var all rollup.RunStats
	for {
		s, err := env.Main.Rollup.RunOnce(context.Background())
		if err != nil {
			t.Fatalf("rollup: %v", err)
		}
		all.Days = append(all.Days, s.Days...)
		all.PeakDays = append(all.PeakDays, s.PeakDays...)
		all.Connections = append(all.Connections, s.Connections...)
		if !s.Full {
			return all
		}
	}
}

func send(t *testing.T, env *apptest.Env, tok string, events ...map[string]any) {
	t.Helper()
	r := env.Do(http.MethodPost, "/proxy/usage/events", tok, map[string]any{"events": events})
	if r.Status != http.StatusCreated {
		t.Fatalf("ingest: %d %s", r.Status, r.Body)
	}
}

func ev(proxy, typ string, at time.Time, data map[string]any) map[string]any {
	return map[string]any{"proxyId": proxy, "eventType": typ, "timestamp": at.Format(time.RFC3339Nano), "eventData": data}
}

func keys(ds []rollup.DayKey) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ProxyID + "@" + d.Day.Format("2006-01-02")
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// After a late event only the affected proxy-days are recomputed, and a
// late connection_end re-pairs its connection and recomputes the peaks of
// every day the old and new intervals cover.
func TestIncrementalRefresh(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		env.MustRegister(tok, "p2")
		today := rollup.Day(time.Now())
		day := func(n int) time.Time { return today.AddDate(0, 0, -n) }
		var evs []map[string]any
		for n := 1; n <= 6; n++ {
			for _, p := range []string{"p1", "p2"} {
				evs = append(evs, ev(p, "data_transfer", day(n).Add(time.Hour), map[string]any{"bytesSent": 100}))
			}
		}
		// A connection on p2 started 5 days ago, not yet ended.
		evs = append(evs, ev("p2", "connection_start", day(5).Add(22*time.Hour), map[string]any{"connectionId": "long"}))
		send(t, env, tok, evs...)
		first := drain(t, env)
		if len(keys(first.Days)) != 12 {
			t.Fatalf("first run recomputed %v", keys(first.Days))
		}

		// A late data event for p1, three days ago.
		send(t, env, tok, ev("p1", "data_transfer", day(3).Add(5*time.Hour), map[string]any{"bytesSent": 1}))
		s := drain(t, env)
		want := []string{"p1@" + day(3).Format("2006-01-02")}
		if got := keys(s.Days); !slices.Equal(got, want) {
			t.Fatalf("late event recomputed %v, want %v", got, want)
		}
		if len(s.Connections) != 0 {
			t.Fatalf("re-paired %v", s.Connections)
		}

		// The end of the long connection, arriving two days after it started:
		// the open interval [d5 22:00, d4 22:00) becomes [d5 22:00, d2 10:00).
		send(t, env, tok, ev("p2", "connection_end", day(2).Add(10*time.Hour), map[string]any{"connectionId": "long", "durationSeconds": 1}))
		s = drain(t, env)
		if got, want := keys(s.Days), []string{"p2@" + day(2).Format("2006-01-02")}; !slices.Equal(got, want) {
			t.Fatalf("late end recomputed sums of %v, want %v", got, want)
		}
		var wantPeaks []string
		for n := 5; n >= 2; n-- {
			wantPeaks = append(wantPeaks, "p2@"+day(n).Format("2006-01-02"))
		}
		slices.Sort(wantPeaks)
		if got := keys(s.PeakDays); !slices.Equal(got, wantPeaks) {
			t.Fatalf("late end recomputed peaks of %v, want %v", got, wantPeaks)
		}
		if len(s.Connections) != 1 || s.Connections[0] != (rollup.ConnKey{ProxyID: "p2", ConnectionID: "long"}) {
			t.Fatalf("re-paired %v", s.Connections)
		}
		// Nothing left to do.
		if s := drain(t, env); len(s.Days)+len(s.PeakDays)+len(s.Connections) != 0 {
			t.Fatalf("idle run did work: %+v", s)
		}
		// And the peaks read back: open on days 5..2, not on day 1.
		for n, want := range map[int]float64{6: 0, 5: 1, 4: 1, 3: 1, 2: 1, 1: 0} {
			r := env.Do("GET", fmt.Sprintf("/proxy/usage/p2/metrics/%s", day(n).Format("2006-01-02")), tok, nil)
			got := r.JSON(t)["metrics"].(map[string]any)["peakConcurrentConnections"]
			if got != want {
				t.Errorf("day -%d peak = %v, want %v", n, got, want)
			}
		}
	})
}

// A report reads only the rollups and the pending deltas: every plan node
// that touches usage_events is never executed, with or without deltas
// waiting.
func TestReportPlanSkipsRawEvents(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		tok := apptest.Token(t, "alice")
		today := rollup.Day(time.Now())
		var proxies []string
		for p := range 5 {
			id := fmt.Sprintf("p%d", p)
			proxies = append(proxies, id)
			env.MustRegister(tok, id)
			var evs []map[string]any
			for n := 1; n <= 30; n++ {
				for i := range 20 {
					evs = append(evs, ev(id, "data_transfer", today.AddDate(0, 0, -n).Add(time.Duration(i)*time.Minute),
						map[string]any{"bytesSent": 10, "latencyMs": i}))
				}
			}
			send(t, env, tok, evs...)
		}
		drain(t, env)
		reader, err := rollup.NewReader(context.Background(), env.Main.Pool, b, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		from, to := today.AddDate(0, 0, -30), today.AddDate(0, 0, -1)
		plan, err := reader.ExplainSums(context.Background(), proxies, from, to, rollup.ByDay)
		if err != nil {
			t.Fatal(err)
		}
		// Raw events live in usage_events, or in its chunks on TimescaleDB.
		raw := []string{"usage_events"}
		if b == database.TimescaleDB {
			rows, err := env.DB.Query(context.Background(), `SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_name = 'usage_events'`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var name string
				if err := rows.Scan(&name); err != nil {
					t.Fatal(err)
				}
				raw = append(raw, name+" ")
			}
			if len(raw) < 30 {
				t.Fatalf("only %d raw chunks", len(raw))
			}
		}
		touchesRaw := func(line string) bool {
			return slices.ContainsFunc(raw, func(r string) bool { return strings.Contains(line, r) })
		}
		rawScans := 0
		for _, line := range strings.Split(plan, "\n") {
			if touchesRaw(line) {
				rawScans++
				if !strings.Contains(line, "never executed") {
					t.Errorf("clean report scans raw events:\n%s\n\nfull plan:\n%s", line, plan)
				}
			}
		}
		t.Logf("%s plan (%d raw-event nodes, none executed):\n%s", b, rawScans, plan)

		// A late event waits as a delta until the worker folds it: reads
		// add it without touching raw events either.
		send(t, env, tok, ev("p1", "data_transfer", today.AddDate(0, 0, -7), map[string]any{"bytesSent": 5}))
		plan, err = reader.ExplainSums(context.Background(), proxies, from, to, rollup.ByDay)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(plan, "\n") {
			if touchesRaw(line) && !strings.Contains(line, "never executed") {
				t.Fatalf("read with a pending delta scans raw events:\n%s\n\nfull plan:\n%s", line, plan)
			}
		}
		if !strings.Contains(plan, "usage_rollup_deltas") {
			t.Fatalf("pending deltas not read:\n%s", plan)
		}
		r := env.Do("GET", "/proxy/usage/report?groupBy=day&startDate="+from.Format("2006-01-02")+"&endDate="+to.Format("2006-01-02"), tok, nil)
		total := r.JSON(t)["totals"].(map[string]any)["bytesSent"]
		if total != float64(5*30*20*10+5) {
			t.Fatalf("report total bytesSent = %v", total)
		}
	})
}
