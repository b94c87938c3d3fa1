package billing_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/billing"
	"proxyusage/internal/database"
	"proxyusage/internal/fixture"
	"proxyusage/internal/ingest"
	"proxyusage/internal/limit"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var alice, bob, admin, service = fixture.Alice, fixture.Bob, fixture.Admin, fixture.Service

func day(s string) time.Time {
	d, err := time.Parse(usage.DateLayout, s)
	if err != nil {
		panic(err)
	}
	return d
}

var november = usage.Period{Start: day("2026-11-01"), End: day("2026-11-30")}

type seeded struct {
	svc    *billing.Store
	events []ingest.Event
}

// newFixture: alice's proxy a1 carries 3 GB on 2 November and 2 GB on 20
// November; bob's b1 1 GB. Today is 1 December.
func newFixture(t *testing.T, b database.Backend) *seeded {
	t.Helper()
	db := fixture.New(t, b)
	db.Own(t, alice, "a1")
	db.Own(t, bob, "b1")
	f := &seeded{events: []ingest.Event{
		{ProxyID: "a1", Time: day("2026-11-02").Add(time.Hour), BytesSent: 2e9, BytesReceived: 1e9},
		{ProxyID: "a1", Time: day("2026-11-20").Add(time.Hour), BytesSent: 1_500_000_000, BytesReceived: 500_000_000},
		{ProxyID: "b1", Time: day("2026-11-20"), BytesSent: 1e9},
	}}
	db.Store(t, day("2026-12-01"), f.events)
	var err error
	f.svc, err = billing.NewStore(billing.Config{Pool: db.Pool, Plans: billing.DefaultPlans(), Reader: db.Reader(t),
		Proxies: db.Proxies, Users: db.Users, Now: func() time.Time { return day("2026-12-01").Add(9 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// gb is the independent computation: the GB alice's proxy carried on the
// days from..to, with the nine decimals bills show.
func (f *seeded) gb(proxyID string, from, to time.Time) string {
	var n int64
	for _, e := range f.events {
		if e.ProxyID == proxyID && !e.Time.Before(from) && e.Time.Before(to.AddDate(0, 0, 1)) {
			n += e.BytesSent + e.BytesReceived
		}
	}
	return decimal.New(n, -9).StringFixed(9)
}

func TestBill(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)
		// alice is premium from the 15th: only the data of the 15th on is
		// charged per GB.
		if _, err := f.svc.UpdateAccount(ctx, admin, billing.AccountUpdate{UserID: "alice", Tier: user.TierPremium, EffectiveFrom: day("2026-11-15")}); err != nil {
			t.Fatal(err)
		}
		bill, err := f.svc.Bill(ctx, alice, billing.BillRequest{Period: november})
		if err != nil {
			t.Fatal(err)
		}
		if len(bill.Tiers) != 2 || bill.Tiers[0] != (billing.TierSpan{Tier: "free", From: "2026-11-01", To: "2026-11-14"}) ||
			bill.Tiers[1] != (billing.TierSpan{Tier: "premium", From: "2026-11-15", To: "2026-11-30"}) {
			t.Errorf("tiers %+v", bill.Tiers)
		}
		var charged []string
		for _, li := range bill.LineItems {
			if li.Unit == "GB" && li.UnitPrice != "0.00" && li.UnitPrice != "0" {
				charged = append(charged, li.Quantity)
			}
		}
		if want := f.gb("a1", day("2026-11-15"), november.End); len(charged) != 1 || charged[0] != want {
			t.Errorf("GB charged %v, want [%s] (premium days only); bill %+v", charged, want, bill)
		}

		// Who may ask: the user and the admin, nobody else.
		for _, c := range []struct {
			who  auth.Principal
			want apperr.Code
		}{{admin, ""}, {bob, apperr.Forbidden}, {service, apperr.Forbidden}} {
			other, err := f.svc.Bill(ctx, c.who, billing.BillRequest{UserID: "alice", Period: november})
			if apperr.CodeOf(err) != c.want && !(c.want == "" && err == nil) {
				t.Errorf("bill of alice by %s: %v, want %q", c.who.UserID, err, c.want)
			}
			if err == nil && !sameJSON(other, bill) {
				t.Errorf("bill of alice by %s differs from her own", c.who.UserID)
			}
			// Authorisation before validation.
			_, err = f.svc.Bill(ctx, c.who, billing.BillRequest{UserID: "alice", Period: usage.Period{Start: november.End, End: november.Start}})
			if want := c.want; apperr.CodeOf(err) != want && !(want == "" && apperr.CodeOf(err) == apperr.Invalid) {
				t.Errorf("reversed period by %s: %v", c.who.UserID, err)
			}
		}
		if _, err := f.svc.Bill(ctx, alice, billing.BillRequest{Period: usage.Period{Start: november.Start, End: november.Start.AddDate(1, 1, 0)}}); apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("a period over %d days: %v", usage.MaxPeriodDays, err)
		}
	})
}

func TestAccounts(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		f := newFixture(t, b)
		valid := billing.AccountUpdate{UserID: "alice", Tier: user.TierEnterprise, EffectiveFrom: day("2026-11-10"),
			Contract: &billing.ContractInput{BaseMonthly: "500.00", PerGB: "0.005"}}
		// Admin only, before anything else is looked at.
		for _, who := range []auth.Principal{alice, bob, service} {
			for _, u := range []billing.AccountUpdate{valid, {UserID: "alice", Tier: "gold"}} {
				if _, err := f.svc.UpdateAccount(ctx, who, u); apperr.CodeOf(err) != apperr.Forbidden {
					t.Errorf("update by %s: %v, want %s", who.UserID, err, apperr.Forbidden)
				}
			}
			if _, err := f.svc.GetAccount(ctx, who, "alice"); apperr.CodeOf(err) != apperr.Forbidden {
				t.Errorf("get by %s: %v, want %s", who.UserID, err, apperr.Forbidden)
			}
		}
		for name, u := range map[string]billing.AccountUpdate{
			"user id with NUL":              {UserID: "a\x00b", Tier: user.TierPremium},
			"unknown tier":                  {UserID: "alice", Tier: "gold"},
			"date at noon":                  {UserID: "alice", Tier: user.TierPremium, EffectiveFrom: day("2026-11-10").Add(12 * time.Hour)},
			"date without tier or contract": {UserID: "alice", EffectiveFrom: day("2026-11-10")},
			"exponent amount":               {UserID: "alice", Contract: &billing.ContractInput{BaseMonthly: "1e3", PerGB: "0"}},
			"too many decimals":             {UserID: "alice", Contract: &billing.ContractInput{BaseMonthly: "1", PerGB: "0.0000001"}},
			"currency":                      {UserID: "alice", Contract: &billing.ContractInput{BaseMonthly: "1", PerGB: "0", Currency: "usd"}},
			"contract set and cleared":      {UserID: "alice", Contract: valid.Contract, ClearContract: true},
			"limit set and cleared":         {UserID: "alice", Limits: &limit.Input{MonthlyGB: "1"}, ClearLimits: true},
			"limit of 0 GB":                 {UserID: "alice", Limits: &limit.Input{MonthlyGB: "0"}},
		} {
			if _, err := f.svc.UpdateAccount(ctx, admin, u); apperr.CodeOf(err) != apperr.Invalid {
				t.Errorf("%s: %v, want %s", name, err, apperr.Invalid)
			}
		}
		// Nothing of the refused updates was stored.
		acc, err := f.svc.GetAccount(ctx, admin, "alice")
		if err != nil || acc.Tier != user.TierFree || len(acc.TierHistory) != 0 || acc.Contract != nil || acc.Limits != nil {
			t.Fatalf("after refusals: %+v %v", acc, err)
		}

		acc, err = f.svc.UpdateAccount(ctx, admin, valid)
		if err != nil {
			t.Fatal(err)
		}
		if acc.Tier != user.TierEnterprise || len(acc.TierHistory) != 1 || acc.TierHistory[0] != (billing.TierEntry{Tier: "enterprise", EffectiveFrom: "2026-11-10"}) ||
			acc.Contract == nil || *acc.Contract != (billing.ContractJSON{BaseMonthly: "500.00", PerGB: "0.005", Currency: "USD"}) {
			t.Errorf("after update: %+v", acc)
		}
		// No date: from today; clearing the contract and setting a limit.
		acc, err = f.svc.UpdateAccount(ctx, admin, billing.AccountUpdate{UserID: "alice", Tier: user.TierPremium,
			ClearContract: true, Limits: &limit.Input{MonthlyGB: "50"}})
		if err != nil || acc.Tier != user.TierPremium || acc.TierHistory[1].EffectiveFrom != "2026-12-01" || acc.Contract != nil ||
			len(acc.ContractHistory) != 0 || acc.Limits == nil || acc.Limits.MonthlyGB != "50" {
			t.Errorf("second update: %+v %v", acc, err)
		}
		// An admin creates a user by updating it; reading an unknown one is 404.
		if _, err := f.svc.GetAccount(ctx, admin, "carol"); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("unknown user: %v", err)
		}
		if _, err := f.svc.UpdateAccount(ctx, admin, billing.AccountUpdate{UserID: "carol"}); err != nil {
			t.Fatal(err)
		}
		if acc, err := f.svc.GetAccount(ctx, admin, "carol"); err != nil || acc.Tier != user.TierFree {
			t.Errorf("carol: %+v %v", acc, err)
		}
	})
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
