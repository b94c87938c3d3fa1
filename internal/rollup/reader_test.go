package rollup_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/exact"
	"proxyusage/internal/rollup"
	"proxyusage/internal/workload"
)

// The one-round-trip path over rolled-up days answers exactly what the
// full path answers, for every grouping, and steps aside while any day or
// connection of the request waits for the worker.
func TestFastPathMatchesFullPath(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		svc := apptest.Token(t, "ingest", "service")
		now := time.Now().UTC()
		gen := workload.New(workload.Config{Seed: 7, Users: 2, Proxies: 6, Start: now.Add(-4 * 24 * time.Hour), End: now.Add(-time.Minute), Events: 3000})
		owner := map[string]string{}
		for _, p := range gen.Proxies() {
			owner[p.ID] = p.UserID
			env.MustRegister(apptest.Token(t, p.UserID), p.ID)
		}
		post := func(g *workload.Generator) {
			for {
				events := g.Next(nil, 500)
				if len(events) == 0 {
					return
				}
				r := env.Do(http.MethodPost, "/proxy/usage/events", svc, workload.AppendBatch(nil, events))
				if r.Status != http.StatusCreated {
					t.Fatalf("ingest: %d %s", r.Status, r.Body)
				}
			}
		}
		post(gen)
		drain(t, env)

		reader, err := rollup.NewReader(context.Background(), env.Main.Pool, b, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var ids []string
		for id := range owner {
			ids = append(ids, id)
		}
		today := rollup.Day(now)
		ranges := [][2]time.Time{{today.AddDate(0, 0, -6), today}, {today.AddDate(0, 0, -2), today.AddDate(0, 0, -1)}, {today, today},
			{today.AddDate(0, 0, -400), today.AddDate(0, 0, -300)}}
		compare := func(wantFast bool) {
			for _, rg := range ranges {
				for _, by := range []rollup.Group{rollup.ByNone, rollup.ByDay, rollup.ByProxy, rollup.ByProxyDay} {
					for _, set := range [][]string{ids, ids[:1]} {
						fast, ok, err := reader.FastTotals(ctx, set, rg[0], rg[1], by)
						if err != nil {
							t.Fatal(err)
						}
						if ok != wantFast {
							t.Fatalf("fast path taken = %v, want %v", ok, wantFast)
						}
						slow, err := reader.SlowTotals(ctx, set, rg[0], rg[1], by)
						if err != nil {
							t.Fatal(err)
						}
						if by == rollup.ByDay {
							// Billing's bytes-only read agrees with the full
							// path, dirty or not.
							got, err := reader.DailyBytes(ctx, set, rg[0], rg[1])
							if err != nil {
								t.Fatal(err)
							}
							want := map[time.Time]exact.Sum{}
							for k, x := range slow {
								want[k.Day] = x.BytesSent.Add(x.BytesReceived)
							}
							if !reflect.DeepEqual(got, want) {
								t.Fatalf("range %v: daily bytes %v, full path %v", rg, got, want)
							}
						}
						if !ok {
							continue
						}
						if err := sameTotals(fast, slow); err != nil {
							t.Fatalf("range %v by %v: %v", rg, by, err)
						}
					}
				}
			}
		}
		compare(true)
		if plan, err := reader.ExplainHistograms(ctx, ids, ranges[0][0], ranges[0][1], rollup.ByDay); err != nil || plan == "" {
			t.Fatalf("explain: %v", err)
		}
		// Late events leave days and connections to re-roll: the fast path
		// steps aside until the worker has run.
		post(workload.New(workload.Config{Seed: 8, Users: 2, Proxies: 6, Start: now.Add(-3 * 24 * time.Hour), End: now.Add(-2 * 24 * time.Hour), Events: 200, Prefix: "late"}))
		ranges = ranges[:1]
		compare(false)
		drain(t, env)
		compare(true)
	})
}

// sameCounts compares the counts, sums and maxima of two totals, exact
// sums by value.
// sameTime says whether two optional times are both absent or equal (a
// group holding only a peak has no event times).
func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

func sameCounts(x, y *rollup.Totals) bool {
	return x.EventCount == y.EventCount && x.ConnectionCount == y.ConnectionCount &&
		x.SuccessCount == y.SuccessCount && x.ErrorCount == y.ErrorCount &&
		x.BytesSent.Cmp(y.BytesSent) == 0 && x.BytesReceived.Cmp(y.BytesReceived) == 0 &&
		x.DurationSumUS.Cmp(y.DurationSumUS) == 0 && x.DurationCount == y.DurationCount &&
		x.LatencySumUS.Cmp(y.LatencySumUS) == 0 && x.LatencyCount == y.LatencyCount &&
		(x.LatencyCount == 0 || x.LatencyMaxUS == y.LatencyMaxUS) && x.Peak == y.Peak
}

func sameTotals(a, b map[rollup.Key]*rollup.Totals) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d groups, full path %d", len(a), len(b))
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok {
			return fmt.Errorf("group %v missing from the full path", k)
		}
		if !sameCounts(x, y) || !reflect.DeepEqual(x.Latency, y.Latency) ||
			!sameTime(x.FirstEventAt, y.FirstEventAt) || !sameTime(x.LastEventAt, y.LastEventAt) {
			return fmt.Errorf("group %v: fast %+v, full %+v", k, *x, *y)
		}
	}
	return nil
}
