package usage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/exact"
	"proxyusage/internal/fixture"
	"proxyusage/internal/ingest"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/rollup"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var alice, bob, admin, service = fixture.Alice, fixture.Bob, fixture.Admin, fixture.Service

// day1 is the first of the three days the fixture's events fall on.
var day1 = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

type seeded struct {
	svc    *usage.Store
	events []ingest.Event
	owner  map[string]string // proxy id → user id
}

// newFixture seeds a migrated database through the packages' own APIs:
// users, proxies (alice owns a1 and a2, bob b1) and events over three
// days, stored as ingest stores them and logged for the rollup worker,
// which does not run: reads answer from raw events, exactly.
func newFixture(t *testing.T, b database.Backend) *seeded {
	t.Helper()
	db := fixture.New(t, b)
	db.Own(t, alice, "a1", "a2")
	db.Own(t, bob, "b1")
	f := &seeded{owner: map[string]string{"a1": "alice", "a2": "alice", "b1": "bob"}}
	n := 0
	add := func(proxyID, typ string, at time.Time, e ingest.Event) {
		n++
		e.ProxyID, e.Type, e.Time, e.EventID = proxyID, typ, at, fmt.Sprintf("e-%d", n)
		f.events = append(f.events, e)
	}
	for d := range 3 {
		day := day1.AddDate(0, 0, d)
		for i, id := range []string{"a1", "a2", "b1"} {
			if id == "a2" && d == 1 {
				continue // a day without events: zero-filled
			}
			for k := range 3 + d + i {
				add(id, ingest.DataTransfer, day.Add(time.Duration(k)*time.Hour),
					ingest.Event{BytesSent: int64(1000*(d+1) + k), BytesReceived: int64(7 * (i + 1) * (k + 1))})
			}
			add(id, ingest.ErrorEvent, day.Add(20*time.Hour), ingest.Event{ErrorMessage: "refused"})
		}
	}
	// Two overlapping connections of a1 on the first day: its peak is 2.
	add("a1", ingest.ConnectionStart, day1.Add(10*time.Hour), ingest.Event{ConnectionID: "c1"})
	add("a1", ingest.ConnectionStart, day1.Add(11*time.Hour), ingest.Event{ConnectionID: "c2"})
	add("a1", ingest.ConnectionEnd, day1.Add(11*time.Hour+30*time.Minute), ingest.Event{ConnectionID: "c2", DurationUS: 1800e6, HasDuration: true})
	add("a1", ingest.ConnectionEnd, day1.Add(12*time.Hour), ingest.Event{ConnectionID: "c1", DurationUS: 7200e6, HasDuration: true})

	db.Store(t, day1.AddDate(0, 0, 3), f.events)
	var err error
	f.svc, err = usage.NewStore(usage.Config{Pool: db.Pool, Reader: db.Reader(t), Proxies: db.Proxies, Users: db.Users,
		Now: func() time.Time { return day1.AddDate(0, 0, 3) }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sums is the independent computation: the fixture's events counted in Go.
type sums struct{ events, sent, received, errors, successes, connections int64 }

func (f *seeded) sum(keep func(e *ingest.Event) bool) sums {
	var s sums
	for i := range f.events {
		e := &f.events[i]
		if !keep(e) {
			continue
		}
		s.events++
		s.sent += e.BytesSent
		s.received += e.BytesReceived
		switch e.Type {
		case ingest.ErrorEvent:
			s.errors++
		case ingest.ConnectionEnd:
			s.successes++
		case ingest.ConnectionStart:
			s.connections++
		}
	}
	return s
}

func (f *seeded) of(userID string, from, to time.Time) func(e *ingest.Event) bool {
	return func(e *ingest.Event) bool {
		return f.owner[e.ProxyID] == userID && !e.Time.Before(from) && e.Time.Before(to.AddDate(0, 0, 1))
	}
}

func checkMetrics(t *testing.T, what string, m usage.Metrics, want sums) {
	t.Helper()
	got := sums{m.EventCount, 0, 0, m.ErrorCount, m.SuccessCount, m.ConnectionCount}
	if m.BytesSent.Cmp(exact.Of(uint64(want.sent))) != 0 || m.BytesReceived.Cmp(exact.Of(uint64(want.received))) != 0 ||
		m.TotalBytes.Cmp(exact.Of(uint64(want.sent+want.received))) != 0 {
		t.Errorf("%s: bytes sent %v received %v total %v, want %d, %d, %d", what, m.BytesSent, m.BytesReceived, m.TotalBytes,
			want.sent, want.received, want.sent+want.received)
	}
	want.sent, want.received = 0, 0
	if got != want {
		t.Errorf("%s: counts %+v, want %+v", what, got, want)
	}
}

func period(from time.Time, days int) usage.Period {
	return usage.Period{Start: from, End: from.AddDate(0, 0, days-1)}
}

func TestReadsMatchEvents(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)
		p := period(day1, 3)

		rep, err := f.svc.Report(ctx, alice, usage.ReportRequest{Period: p})
		if err != nil {
			t.Fatal(err)
		}
		if rep.UserID != "alice" || rep.GroupBy != "day" || len(rep.Rows) != 3 {
			t.Fatalf("report: %+v", rep)
		}
		for i, row := range rep.Rows {
			d := day1.AddDate(0, 0, i)
			if row.Date != d.Format(usage.DateLayout) {
				t.Errorf("row %d is %s", i, row.Date)
			}
			checkMetrics(t, "alice "+row.Date, row.Metrics, f.sum(f.of("alice", d, d)))
		}
		checkMetrics(t, "alice totals", rep.Totals, f.sum(f.of("alice", p.Start, p.End)))
		if rep.Rows[0].PeakConcurrentConnections != 2 || rep.Totals.PeakConcurrentConnections != 2 {
			t.Errorf("peak: day %d, totals %d; want 2 (c1 and c2 overlap)", rep.Rows[0].PeakConcurrentConnections, rep.Totals.PeakConcurrentConnections)
		}

		byProxy, err := f.svc.Report(ctx, alice, usage.ReportRequest{Period: p, GroupBy: usage.GroupByProxy})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, row := range byProxy.Rows {
			ids = append(ids, row.ProxyID)
			checkMetrics(t, "alice "+row.ProxyID, row.Metrics, f.sum(func(e *ingest.Event) bool { return e.ProxyID == row.ProxyID }))
		}
		if !slices.Equal(ids, []string{"a1", "a2"}) {
			t.Errorf("proxy rows %v, want [a1 a2]", ids)
		}
		if !sameJSON(byProxy.Totals, rep.Totals) {
			t.Errorf("totals by proxy %+v differ from by day %+v", byProxy.Totals, rep.Totals)
		}

		// A day with no events of a2 is zero-filled, not left out.
		rng, err := f.svc.Range(ctx, alice, usage.RangeRequest{ProxyID: "a2", Period: p})
		if err != nil {
			t.Fatal(err)
		}
		if rng.Count != 3 || rng.Metrics[1].EventCount != 0 {
			t.Fatalf("range of a2: %+v", rng)
		}
		for _, dm := range rng.Metrics {
			d, _ := time.Parse(usage.DateLayout, dm.Date)
			checkMetrics(t, "a2 "+dm.Date, dm.Metrics, f.sum(func(e *ingest.Event) bool { return e.ProxyID == "a2" && rollup.Day(e.Time).Equal(d) }))
		}

		daily, err := f.svc.Daily(ctx, alice, usage.DailyRequest{ProxyID: "a1", Date: day1})
		if err != nil {
			t.Fatal(err)
		}
		checkMetrics(t, "a1 daily", daily.Metrics, f.sum(func(e *ingest.Event) bool { return e.ProxyID == "a1" && rollup.Day(e.Time).Equal(day1) }))
		if avg := daily.Metrics.AvgConnectionDurationSeconds; avg == nil || *avg != (1800+7200)/2 {
			t.Errorf("a1 average connection duration %v, want 4500 s", avg)
		}

		sum, err := f.svc.Summary(ctx, alice, "a1")
		if err != nil {
			t.Fatal(err)
		}
		checkMetrics(t, "a1 summary", sum.Totals, f.sum(func(e *ingest.Event) bool { return e.ProxyID == "a1" }))
		if sum.OpenConnections != 0 || sum.FirstEventAt == nil || !sum.FirstEventAt.Equal(day1) {
			t.Errorf("a1 summary: open %d, first event %v", sum.OpenConnections, sum.FirstEventAt)
		}

		agg, err := f.svc.Aggregation(ctx, alice, usage.AggregationRequest{Period: p})
		if err != nil {
			t.Fatal(err)
		}
		checkMetrics(t, "alice aggregation", agg.Totals, f.sum(f.of("alice", p.Start, p.End)))
		if agg.ProxyCount != 2 || agg.ActiveDays != 3 || agg.Tier != user.TierFree {
			t.Errorf("aggregation: %d proxies, %d active days, tier %s; want 2, 3, free", agg.ProxyCount, agg.ActiveDays, agg.Tier)
		}

		tiers, err := f.svc.TierAggregation(ctx, admin, usage.AggregationRequest{Period: p, GroupBy: usage.GroupByTier})
		if err != nil {
			t.Fatal(err)
		}
		if len(tiers.Rows) != 1 || tiers.Rows[0].Tier != user.TierFree || tiers.Rows[0].UserCount != 2 || tiers.Rows[0].ProxyCount != 3 {
			t.Fatalf("tier aggregation: %+v", tiers)
		}
		checkMetrics(t, "free tier", tiers.Rows[0].Totals, f.sum(func(*ingest.Event) bool { return true }))

		snap, err := f.svc.Snapshot(ctx, alice, usage.SnapshotRequest{Period: p})
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(snap.Aggregation, agg) {
			t.Errorf("snapshot stored %+v, want the live aggregation %+v", snap.Aggregation, agg)
		}
	})
}

func TestValidation(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)
		good := period(day1, 3)
		bad := map[string]usage.Period{
			"end before start": {Start: day1.AddDate(0, 0, 1), End: day1},
			"367 days":         period(day1, usage.MaxPeriodDays+1),
			"not a day":        {Start: day1.Add(time.Hour), End: day1.AddDate(0, 0, 1)},
		}
		for name, p := range bad {
			for what, err := range map[string]error{
				"report":      second(f.svc.Report(ctx, alice, usage.ReportRequest{Period: p})),
				"range":       second(f.svc.Range(ctx, alice, usage.RangeRequest{ProxyID: "a1", Period: p})),
				"aggregation": second(f.svc.Aggregation(ctx, alice, usage.AggregationRequest{Period: p})),
				"tiers":       second(f.svc.TierAggregation(ctx, admin, usage.AggregationRequest{Period: p})),
				"snapshot":    second(f.svc.Snapshot(ctx, alice, usage.SnapshotRequest{Period: p})),
			} {
				if apperr.CodeOf(err) != apperr.Invalid {
					t.Errorf("%s with period %s: %v, want %s", what, name, err, apperr.Invalid)
				}
			}
		}
		for what, err := range map[string]error{
			"report groupBy=tier":         second(f.svc.Report(ctx, alice, usage.ReportRequest{Period: good, GroupBy: usage.GroupByTier})),
			"report groupBy=x":            second(f.svc.Report(ctx, alice, usage.ReportRequest{Period: good, GroupBy: "x"})),
			"aggregation groupBy=day":     second(f.svc.Aggregation(ctx, alice, usage.AggregationRequest{Period: good, GroupBy: usage.GroupByDay})),
			"tier aggregation for a user": second(f.svc.TierAggregation(ctx, admin, usage.AggregationRequest{Period: good, UserID: "alice"})),
			"daily at noon":               second(f.svc.Daily(ctx, alice, usage.DailyRequest{ProxyID: "a1", Date: day1.Add(12 * time.Hour)})),
			"user id with NUL":            second(f.svc.Report(ctx, admin, usage.ReportRequest{UserID: "a\x00b", Period: good})),
		} {
			if apperr.CodeOf(err) != apperr.Invalid {
				t.Errorf("%s: %v, want %s", what, err, apperr.Invalid)
			}
		}
		// Nothing was stored by the refused snapshots.
		if snap, err := f.svc.Snapshot(ctx, alice, usage.SnapshotRequest{Period: good}); err != nil || snap.Aggregation.UserID != "alice" {
			t.Fatalf("valid snapshot: %+v %v", snap, err)
		}
	})
}

func TestAuthorisation(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)
		p := period(day1, 3)
		own, err := f.svc.Report(ctx, alice, usage.ReportRequest{Period: p})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			who  auth.Principal
			want apperr.Code
		}{{alice, ""}, {admin, ""}, {bob, apperr.Forbidden}, {service, apperr.Forbidden}} {
			for what, err := range map[string]error{
				"report":      second(f.svc.Report(ctx, c.who, usage.ReportRequest{UserID: "alice", Period: p})),
				"aggregation": second(f.svc.Aggregation(ctx, c.who, usage.AggregationRequest{UserID: "alice", Period: p})),
				"snapshot":    second(f.svc.Snapshot(ctx, c.who, usage.SnapshotRequest{UserID: "alice", Period: p})),
				// Who may ask comes before what is asked: a caller learns
				// nothing from the validation of a request it may not make.
				"report with a bad groupBy": second(f.svc.Report(ctx, c.who, usage.ReportRequest{UserID: "alice", Period: p, GroupBy: "x"})),
			} {
				want := c.want
				if want == "" && what == "report with a bad groupBy" {
					want = apperr.Invalid
				}
				if apperr.CodeOf(err) != want && !(want == "" && err == nil) {
					t.Errorf("%s by %s: %v, want %q", what, c.who.UserID, err, want)
				}
			}
			// Someone else's proxy is not found, never forbidden.
			proxyWant := apperr.NotFound
			if c.want == "" {
				proxyWant = ""
			}
			for what, err := range map[string]error{
				"range":   second(f.svc.Range(ctx, c.who, usage.RangeRequest{ProxyID: "a1", Period: p})),
				"daily":   second(f.svc.Daily(ctx, c.who, usage.DailyRequest{ProxyID: "a1", Date: day1})),
				"summary": second(f.svc.Summary(ctx, c.who, "a1")),
				"range with a bad period": second(f.svc.Range(ctx, c.who, usage.RangeRequest{ProxyID: "a1",
					Period: usage.Period{Start: day1, End: day1.AddDate(-2, 0, 0)}})),
			} {
				want := proxyWant
				if want == "" && what == "range with a bad period" {
					want = apperr.Invalid
				}
				if apperr.CodeOf(err) != want && !(want == "" && err == nil) {
					t.Errorf("%s of a1 by %s: %v, want %q", what, c.who.UserID, err, want)
				}
			}
		}
		// The admin reads alice's report as alice does.
		other, err := f.svc.Report(ctx, admin, usage.ReportRequest{UserID: "alice", Period: p})
		if err != nil || !sameJSON(other.Totals, own.Totals) || other.UserID != "alice" {
			t.Errorf("admin's view of alice: %+v %v, want %+v", other.Totals, err, own.Totals)
		}
		if _, err := f.svc.TierAggregation(ctx, alice, usage.AggregationRequest{Period: p}); apperr.CodeOf(err) != apperr.Forbidden {
			t.Errorf("tier aggregation by a plain user: %v, want %s", err, apperr.Forbidden)
		}
		// Only an admin can name a user that has no row.
		if _, err := f.svc.Snapshot(ctx, admin, usage.SnapshotRequest{UserID: "nobody", Period: p}); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("snapshot of an unknown user: %v, want %s", err, apperr.NotFound)
		}
	})
}

func second[T any](_ T, err error) error { return err }

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
