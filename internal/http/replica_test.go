package http_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/localdb"
	"proxyusage/internal/pgtest"
)

// TestReadsFromStandby runs read endpoints against a real streaming standby
// whose replay trails the primary (pgtest.StandbyApplyDelay): right after
// a 201 every read is exact when it waits for the fence, stale when it
// does not (so the fence is what makes it exact), and served by the
// primary, still exact and without an error, when the standby is paused
// past the fence timeout or stopped. The subtests share the test binary's
// standby and pause and stop it, so they run one at a time.
func TestReadsFromStandby(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		// The reference: every read on the primary.
		primary := apptest.Start(t, b, apptest.Quiet)
		fenced := primary.Replica(apptest.Quiet, apptest.ReadFromStandby(t, 5*time.Second))
		unfenced := primary.Replica(apptest.Quiet, apptest.ReadFromStandby(t, 0), apptest.NoReadFence)
		short := primary.Replica(apptest.Quiet, apptest.ReadFromStandby(t, 50*time.Millisecond))
		standby := pgtest.Standby(t)

		admin := apptest.Token(t, "root", "admin")
		svc := apptest.Token(t, "edge", "service")
		alice := apptest.Token(t, "alice")
		primary.MustRegister(alice, "a1")
		// Priced per GB, so each event below changes the bill.
		if r := primary.Do(http.MethodPut, "/admin/users/alice", admin, map[string]any{"tier": "enterprise", "effectiveFrom": "2020-01-01",
			"contract": map[string]string{"baseMonthly": "0", "perGB": "1", "currency": "USD"}}); r.Status != 200 {
			t.Fatalf("contract: %d %s", r.Status, r.Body)
		}
		now := time.Now().UTC()
		today := now.Format("2006-01-02")
		monthStart := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).Format("2006-01-02")
		// Every read endpoint whose answer an event of a1 changes.
		reads := []struct{ token, path string }{
			{alice, "/proxy/usage/a1/metrics/" + today},
			{alice, "/proxy/usage/a1/metrics?startDate=" + monthStart + "&endDate=" + today},
			{alice, "/proxy/usage/a1/summary"},
			{alice, "/proxy/usage/report?startDate=" + monthStart + "&endDate=" + today},
			{alice, "/proxy/usage/aggregation?periodStart=" + monthStart + "&periodEnd=" + today},
			{alice, "/proxy/usage/billing?periodStart=" + monthStart + "&periodEnd=" + today},
			{alice, "/proxy/usage/limits"},
			{svc, "/proxy/usage/access/a1"},
		}
		events := 0
		write := func(t *testing.T, env *apptest.Env) {
			t.Helper()
			events++
			ev := transfer("a1", now, fmt.Sprintf("ev-%d", events), 1_000_000_000, int64(events))
			if r := env.Do(http.MethodPost, "/proxy/usage/events", svc, map[string]any{"events": []any{ev}}); r.Status != 201 {
				t.Fatalf("ingest: %d %s", r.Status, r.Body)
			}
		}
		read := func(t *testing.T, env *apptest.Env, token, path string) string {
			t.Helper()
			r := env.Do(http.MethodGet, path, token, nil)
			if r.Status != 200 {
				t.Fatalf("%s: %d %s", path, r.Status, r.Body)
			}
			return string(r.Body)
		}
		served := func(t *testing.T, env *apptest.Env, server string) float64 {
			return counterValue(t, env.Main.Metrics.ReadsServed.WithLabelValues(server))
		}
		fallbacks := func(t *testing.T, env *apptest.Env, reason string) float64 {
			return counterValue(t, env.Main.Metrics.ReadFallbacks.WithLabelValues(reason))
		}
		// Some days rolled up, the newest events not: reads take both paths.
		write(t, primary)
		if _, err := primary.Main.Rollup.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		standbySQL := func(t *testing.T, sql string) {
			t.Helper()
			conn, err := pgx.Connect(context.Background(), standby.URL("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(context.Background(), sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}

		t.Run("exact with the fence", func(t *testing.T) {
			for _, rd := range reads {
				before := served(t, fenced, "standby")
				write(t, fenced)
				got := read(t, fenced, rd.token, rd.path)
				if want := read(t, primary, rd.token, rd.path); got != want {
					t.Errorf("%s right after a 201:\n got %s\nwant %s", rd.path, got, want)
				}
				if served(t, fenced, "standby") == before {
					t.Errorf("%s was not served by the standby", rd.path)
				}
			}
			// A write the account endpoint shows.
			if r := fenced.Do(http.MethodPut, "/admin/users/alice", admin, map[string]any{"limits": map[string]any{"monthlyGB": "7", "enforcement": "soft"}}); r.Status != 200 {
				t.Fatalf("set limits: %d %s", r.Status, r.Body)
			}
			if got, want := read(t, fenced, admin, "/admin/users/alice"), read(t, primary, admin, "/admin/users/alice"); got != want {
				t.Errorf("account right after its update:\n got %s\nwant %s", got, want)
			}
			for _, reason := range database.FallbackReasons {
				if n := fallbacks(t, fenced, reason); n != 0 {
					t.Errorf("%v fallbacks (%s): the standby should have served every read", n, reason)
				}
			}
		})

		// A paused replay is a standby that lags for as long as the test
		// needs, whatever the machine's load.
		standbySQL(t, `SELECT pg_wal_replay_pause()`)
		resumed := false
		defer func() {
			if !resumed {
				standbySQL(t, `SELECT pg_wal_replay_resume()`)
			}
		}()
		waitPaused(t, standby)
		t.Run("stale without the fence", func(t *testing.T) {
			for _, rd := range reads {
				before := served(t, unfenced, "standby")
				write(t, unfenced)
				if got, want := read(t, unfenced, rd.token, rd.path), read(t, primary, rd.token, rd.path); got == want {
					t.Errorf("%s without the fence matches the primary right after a 201: the test cannot show that the fence matters", rd.path)
				}
				if served(t, unfenced, "standby") == before {
					t.Errorf("%s was not served by the standby", rd.path)
				}
			}
		})
		t.Run("fence timeout falls back to the primary", func(t *testing.T) {
			before := fallbacks(t, short, database.FallbackTimeout)
			for _, rd := range reads {
				write(t, short)
				if got, want := read(t, short, rd.token, rd.path), read(t, primary, rd.token, rd.path); got != want {
					t.Errorf("%s after a fence timeout:\n got %s\nwant %s", rd.path, got, want)
				}
			}
			if fallbacks(t, short, database.FallbackTimeout) < before+float64(len(reads)) {
				t.Errorf("timeout fallbacks %v, want at least %d more than %v", fallbacks(t, short, database.FallbackTimeout), len(reads), before)
			}
		})
		standbySQL(t, `SELECT pg_wal_replay_resume()`)
		resumed = true

		t.Run("stopped standby falls back to the primary", func(t *testing.T) {
			if err := standby.Kill(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := standby.Restart(ctx); err != nil {
					t.Fatalf("restart the standby: %v", err)
				}
			}()
			before := served(t, fenced, "primary")
			for _, rd := range reads {
				write(t, fenced)
				if got, want := read(t, fenced, rd.token, rd.path), read(t, primary, rd.token, rd.path); got != want {
					t.Errorf("%s with the standby stopped:\n got %s\nwant %s", rd.path, got, want)
				}
			}
			if served(t, fenced, "primary") < before+float64(len(reads)) || fallbacks(t, fenced, database.FallbackUnavailable) == 0 {
				t.Errorf("served by the primary %v (before %v), unavailable fallbacks %v", served(t, fenced, "primary"), before,
					fallbacks(t, fenced, database.FallbackUnavailable))
			}
		})
	})
}

// waitPaused waits until the standby's replay has actually stopped.
func waitPaused(t *testing.T, standby *localdb.Cluster) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, standby.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(time.Minute); ; {
		var state string
		if err := conn.QueryRow(ctx, `SELECT pg_get_wal_replay_pause_state()`).Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state == "paused" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby replay is %s, not paused", state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
