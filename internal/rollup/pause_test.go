package rollup_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
)

// While ingest is active the worker waits BusyPause times its last run, so
// it takes at most 1/(1+BusyPause) of the time; otherwise it keeps its pace.
func TestWorkerYieldsToIngest(t *testing.T) {
	busy := false
	// The pool is never used by pause; it only satisfies the config.
	pool, err := pgxpool.New(context.Background(), pgtest.NewDB(t, database.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	w, err := rollup.NewWorker(rollup.WorkerConfig{
		Pool: pool, Backend: database.Postgres, Metrics: telemetry.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxConnectionAge: time.Hour,
		IngestActive: func() bool { return busy },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		busy       bool
		next, took time.Duration
		want       time.Duration
	}{
		{false, time.Second, 2 * time.Second, time.Second},
		{false, 0, 2 * time.Second, 0}, // backlog, idle machine: at once
		{true, 0, 2 * time.Second, 6 * time.Second},
		{true, time.Second, 100 * time.Millisecond, time.Second},
		{true, time.Second, time.Second, 3 * time.Second},
	} {
		busy = c.busy
		if got := w.Pause(c.next, c.took); got != c.want {
			t.Errorf("busy=%v next=%v took=%v: pause %v, want %v", c.busy, c.next, c.took, got, c.want)
		}
	}
}
