package rollup_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
)

// The logs hold a row per flush. A run reads whole rows, oldest first,
// until they name BatchSize distinct keys; Full says more wait; every row
// is consumed once and the rollups end up as one big run makes them.
func TestWorkerReadsLogRowsInBatches(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		env.MustRegister(tok, "p2")
		today := rollup.Day(time.Now())
		// Seven one-entry rows (sequential requests are separate flushes),
		// three more repeating the first proxy-day, then one row of eight
		// entries (p1 and p2 on four days) with a connection row of two.
		for n := 1; n <= 7; n++ {
			send(t, env, tok, ev("p1", "data_transfer", today.AddDate(0, 0, -n).Add(time.Hour), map[string]any{"bytesSent": n}))
		}
		for n := range 3 {
			send(t, env, tok, ev("p1", "data_transfer", today.AddDate(0, 0, -1).Add(time.Duration(n)*time.Minute), map[string]any{"bytesSent": n}))
		}
		var batch []map[string]any
		for n := 10; n < 14; n++ {
			for _, p := range []string{"p1", "p2"} {
				batch = append(batch, ev(p, "data_transfer", today.AddDate(0, 0, -n).Add(time.Hour), map[string]any{"bytesReceived": n}))
			}
		}
		batch = append(batch,
			ev("p2", "connection_start", today.AddDate(0, 0, -11), map[string]any{"connectionId": "c1"}),
			ev("p2", "connection_end", today.AddDate(0, 0, -11).Add(time.Minute), map[string]any{"connectionId": "c1", "durationSeconds": 60}),
			ev("p1", "connection_start", today.AddDate(0, 0, -12), map[string]any{"connectionId": "c2"}))
		send(t, env, tok, batch...)
		if rows := env.Count(`SELECT count(*) FROM usage_rollup_deltas`); rows != 11 {
			t.Fatalf("%d delta rows, want 11 (one per flush)", rows)
		}

		w, err := rollup.NewWorker(rollup.WorkerConfig{
			Pool: env.Main.Pool, Backend: b, Metrics: telemetry.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxConnectionAge: 24 * time.Hour, BatchSize: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		// Runs take 3 rows of distinct proxy-days, 3 more, then rows until
		// 3 distinct ones are read: the seventh day, three repeats of the
		// first (they count once) and the eight-entry row (a row is never
		// split): 10 days; then they find nothing.
		var days []rollup.DayKey
		for i, want := range []struct {
			days int
			full bool
		}{{3, true}, {3, true}, {10, true}, {0, false}} {
			s, err := w.RunOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Days) != want.days || s.Full != want.full {
				t.Fatalf("run %d: %d days, full %v; want %d, %v", i, len(s.Days), s.Full, want.days, want.full)
			}
			days = append(days, s.Days...)
		}
		if got := len(keys(days)); got != 15 {
			t.Fatalf("%d distinct proxy-days rolled up, want 15", got)
		}
		if n := env.Count(`SELECT count(*) FROM usage_rollup_deltas`) + env.Count(`SELECT count(*) FROM usage_connection_invalidations`); n != 0 {
			t.Fatalf("%d log rows left", n)
		}
		if n := env.Count(`SELECT count(*) FROM usage_connections`); n != 2 {
			t.Fatalf("%d connection intervals, want 2", n)
		}
		if n := env.Count(`SELECT coalesce(sum(peak), 0) FROM usage_daily_peak WHERE proxy_id = 'p2'`); n != 1 {
			t.Fatalf("p2 peaks sum to %d, want 1", n)
		}
	})
}
