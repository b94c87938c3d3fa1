package http_test

import (
	"context"
	"testing"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// A caller's heavy reads (more proxy-days than HEAVY_READ_THRESHOLD) take
// at most one of the HEAVY_READ_SLOTS: its next heavy read waits, another
// caller's cheap and heavy reads do not, and a wait that outlasts
// READ_TIMEOUT is the usual 503.
func TestFairHeavyReads(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.Quiet, func(m *app.Main) {
			m.Config.HeavyReadSlots = 2
			m.Config.HeavyReadThreshold = 10 // proxy-days: a 3-day read of 2 proxies is cheap, a 30-day one heavy
			m.Config.ReadTimeout = 3 * time.Second
		})
		mallory, alice := apptest.Token(t, "mallory"), apptest.Token(t, "alice")
		for _, id := range []string{"m1", "m2"} {
			env.MustRegister(mallory, id)
		}
		for _, id := range []string{"a1", "a2"} {
			env.MustRegister(alice, id)
		}
		const (
			cheap = "/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-03"
			heavy = "/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-30"
			bill  = "/proxy/usage/billing?periodStart=2026-01-01&periodEnd=2026-01-30"
		)
		gate := env.Main.HeavyReads
		// Mallory's year report, as long as the test needs it: one slot is
		// mallory's, one is free.
		release, err := gate.Acquire(context.Background(), "mallory", 1<<30)
		if err != nil {
			t.Fatal(err)
		}

		queued := make(chan apptest.Response, 1)
		go func() { queued <- env.Do("GET", heavy, mallory, nil) }()
		waitFor(t, "mallory's second heavy read to wait", func() bool { return gate.Waiting() == 1 })

		// Meanwhile alice reads, cheap and heavy, at once: all done while
		// mallory's read still waits.
		for _, path := range []string{cheap, heavy, bill, cheap} {
			if r := env.Do("GET", path, alice, nil); r.Status != 200 {
				t.Fatalf("alice %s: %d %s", path, r.Status, r.Body)
			}
		}
		if gate.Waiting() != 1 {
			t.Fatalf("mallory's read no longer waits after alice's reads (%d waiting): alice waited behind it", gate.Waiting())
		}
		// Mallory's cheap reads pass; its heavy ones wait, here past
		// READ_TIMEOUT.
		if r := env.Do("GET", cheap, mallory, nil); r.Status != 200 {
			t.Fatalf("mallory's cheap read: %d %s", r.Status, r.Body)
		}
		r := <-queued
		r.ExpectError(t, 503, "PROXY_USAGE_002")
		if got := counterValue(t, env.Main.Metrics.HeavyReadsGaveUp); got != 1 {
			t.Errorf("gave up %v, want 1", got)
		}
		if gate.Waiting() != 0 || gate.Running() != 1 {
			t.Fatalf("after the timeout: waiting %d, running %d (mallory's only)", gate.Waiting(), gate.Running())
		}
		release()
		if r := env.Do("GET", heavy, mallory, nil); r.Status != 200 {
			t.Fatalf("mallory's heavy read after its first ended: %d %s", r.Status, r.Body)
		}
		if gate.Running() != 0 {
			t.Fatalf("running %d after every read ended", gate.Running())
		}
	})
}
