package limit_test

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/fixture"
	"proxyusage/internal/ingest"
	"proxyusage/internal/limit"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/proxy"
	"proxyusage/internal/user"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var alice, bob, admin, service = fixture.Alice, fixture.Bob, fixture.Admin, fixture.Service

// now is mid-November; October's events do not count this month.
var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

type seeded struct {
	svc     *limit.Store
	proxies *proxy.Store
	events  []ingest.Event
}

// newFixture: alice (proxy a1) has her own hard limit of 5000 bytes; bob
// (proxy b1) is on the free plan, which carries a soft 1 GB limit.
func newFixture(t *testing.T, b database.Backend) *seeded {
	t.Helper()
	ctx := context.Background()
	db := fixture.New(t, b)
	db.Own(t, alice, "a1")
	db.Own(t, bob, "b1")
	f := &seeded{proxies: db.Proxies}
	own, err := limit.Input{MonthlyGB: "0.000005"}.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return limit.Set(ctx, tx, "alice", &own) }); err != nil {
		t.Fatal(err)
	}
	f.events = []ingest.Event{
		{ProxyID: "a1", Time: time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), BytesSent: 3000, BytesReceived: 1},
		{ProxyID: "a1", Time: time.Date(2026, 11, 19, 23, 0, 0, 0, time.UTC), BytesSent: 1999, BytesReceived: 500},
		{ProxyID: "a1", Time: time.Date(2026, 10, 31, 23, 59, 0, 0, time.UTC), BytesSent: 1 << 40}, // last month
		{ProxyID: "b1", Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), BytesSent: 60, BytesReceived: 40},
	}
	db.Store(t, now, f.events)
	plan := limit.Limit{MonthlyGB: decimal.New(1, 0), Enforcement: limit.Soft, AlertPercents: limit.DefaultAlertPercents()}
	f.svc, err = limit.NewStore(limit.Config{Pool: db.Pool, Reader: db.Reader(t), Now: func() time.Time { return now },
		PlanLimit: func(tier string) *limit.Limit {
			if tier == user.TierFree {
				return &plan
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// usedThisMonth is the independent computation: the proxy's bytes sent
// and received in now's month.
func (f *seeded) usedThisMonth(proxyID string) string {
	var n int64
	for _, e := range f.events {
		if e.ProxyID == proxyID && e.Time.Year() == now.Year() && e.Time.Month() == now.Month() {
			n += e.BytesSent + e.BytesReceived
		}
	}
	return limit.UsedString(big.NewInt(n))
}

func TestStatus(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)

		st, err := f.svc.Status(ctx, alice, "")
		if err != nil {
			t.Fatal(err)
		}
		if st.UsedGB != f.usedThisMonth("a1") || st.UsedGB != "0.000005500" || !st.Exceeded ||
			*st.Source != "user" || *st.Enforcement != limit.Hard || *st.LimitGB != "0.000005" || *st.RemainingGB != "0.000000000" ||
			st.Month != "2026-11" || st.ResetsAt != "2026-12-01T00:00:00Z" {
			t.Errorf("alice: %+v", st)
		}
		st, err = f.svc.Status(ctx, bob, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if st.UsedGB != f.usedThisMonth("b1") || st.Exceeded || *st.Source != "plan" || *st.Enforcement != limit.Soft ||
			*st.RemainingGB != "0.999999900" {
			t.Errorf("bob: %+v", st)
		}

		for _, c := range []struct {
			who    auth.Principal
			userID string
			want   apperr.Code
		}{
			{admin, "alice", ""}, {bob, "alice", apperr.Forbidden}, {service, "alice", apperr.Forbidden},
			{admin, "nobody", apperr.NotFound}, {alice, "a\x00b", apperr.Invalid}, {admin, "a\x00b", apperr.Invalid},
		} {
			_, err := f.svc.Status(ctx, c.who, c.userID)
			if apperr.CodeOf(err) != c.want && !(c.want == "" && err == nil) {
				t.Errorf("status of %q by %s: %v, want %q", c.userID, c.who.UserID, err, c.want)
			}
		}
	})
}

func TestAccess(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)
		// Alice's hard limit is reached: refused, for everyone who may ask.
		for _, who := range []auth.Principal{alice, admin, service} {
			a, err := f.svc.Access(ctx, who, "a1")
			if err != nil || a.Allowed || a.Reason != limit.ReasonExceeded || a.UsedGB != f.usedThisMonth("a1") || a.UserID != "alice" {
				t.Errorf("a1 by %s: %+v %v", who.UserID, a, err)
			}
		}
		// Someone else's proxy, an unknown one and an impossible id: not found.
		for id, who := range map[string]auth.Principal{"a1": bob, "nope": alice, "..": admin} {
			if _, err := f.svc.Access(ctx, who, id); apperr.CodeOf(err) != apperr.NotFound {
				t.Errorf("%q by %s: %v, want %s", id, who.UserID, err, apperr.NotFound)
			}
		}
		// A soft limit never refuses; an archived proxy always does.
		a, err := f.svc.Access(ctx, service, "b1")
		if err != nil || !a.Allowed || a.Reason != limit.ReasonOK || *a.Enforcement != limit.Soft {
			t.Errorf("b1: %+v %v", a, err)
		}
		if err := f.proxies.Archive(ctx, bob, "b1"); err != nil {
			t.Fatal(err)
		}
		if a, err = f.svc.Access(ctx, bob, "b1"); err != nil || a.Allowed || a.Reason != limit.ReasonArchived {
			t.Errorf("archived b1: %+v %v", a, err)
		}
	})
}

func TestInputParse(t *testing.T) {
	for _, in := range []limit.Input{
		{}, {MonthlyGB: "0"}, {MonthlyGB: "-1"}, {MonthlyGB: "1e3"}, {MonthlyGB: " 1"}, {MonthlyGB: ".5"},
		{MonthlyGB: "0.0000000001"}, {MonthlyGB: "1000000001"},
		{MonthlyGB: "1", Enforcement: "HARD"},
		{MonthlyGB: "1", AlertPercents: []int{0}}, {MonthlyGB: "1", AlertPercents: []int{limit.MaxPercent + 1}},
		{MonthlyGB: "1", AlertPercents: []int{50, 50}}, {MonthlyGB: "1", AlertPercents: make([]int, limit.MaxAlertPercents+1)},
	} {
		if _, err := in.Parse(); apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("%+v: %v, want %s", in, err, apperr.Invalid)
		}
	}
	l, err := limit.Input{MonthlyGB: "1000000000", AlertPercents: []int{100, 5, 1000}}.Parse()
	if err != nil || l.Enforcement != limit.Hard || l.AlertPercents[0] != 5 || l.AlertPercents[2] != 1000 {
		t.Errorf("valid input: %+v %v", l, err)
	}
	if l, err := (limit.Input{MonthlyGB: "0.000000001", Enforcement: limit.Soft}).Parse(); err != nil || len(l.AlertPercents) != 2 {
		t.Errorf("defaults: %+v %v", l, err)
	}
}
