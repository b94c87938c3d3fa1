package http_test

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// refBill is an independent reference for the billing arithmetic of docs/billing.md,
// written with math/big rationals: cut at tier changes and month
// boundaries, base × days / days-in-month and GB × price per piece, each
// rounded half-up to cents, total = sum.
func refBill(from, to time.Time, tierOn func(time.Time) string, bytesOn func(day string) *big.Int, base, perGB map[string]string) (items []string, total string) {
	cents := func(r *big.Rat) *big.Rat {
		// half-up for non-negative r: floor(r*100 + 1/2) / 100
		x := new(big.Rat).Mul(r, big.NewRat(100, 1))
		x.Add(x, big.NewRat(1, 2))
		q := new(big.Int).Quo(x.Num(), x.Denom())
		return new(big.Rat).SetFrac(q, big.NewInt(100))
	}
	rat := func(s string) *big.Rat { r, _ := new(big.Rat).SetString(s); return r }
	sum := new(big.Rat)
	for d := from; !d.After(to); {
		tier := tierOn(d)
		start := d
		days := int64(0)
		bytes := new(big.Int)
		for ; !d.After(to) && tierOn(d) == tier && d.Month() == start.Month(); d = d.AddDate(0, 0, 1) {
			days++
			bytes.Add(bytes, bytesOn(d.Format("2006-01-02")))
		}
		dim := int64(time.Date(start.Year(), start.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day())
		b := cents(new(big.Rat).Mul(rat(base[tier]), big.NewRat(days, dim)))
		g := cents(new(big.Rat).Mul(rat(perGB[tier]), new(big.Rat).SetFrac(bytes, big.NewInt(1_000_000_000))))
		for _, a := range []*big.Rat{b, g} {
			if a.Sign() != 0 {
				items = append(items, a.FloatString(2))
				sum.Add(sum, a)
			}
		}
	}
	return items, sum.FloatString(2)
}

func TestBillingEndToEnd(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		admin := apptest.Token(t, "root", "admin")
		alice := apptest.Token(t, "alice")
		bob := apptest.Token(t, "bob")
		env.MustRegister(alice, "a1")
		env.MustRegister(alice, "a2")
		env.MustRegister(bob, "b1")

		today := time.Now().UTC().Truncate(24 * time.Hour)
		from := today.AddDate(0, 0, -30)
		change := today.AddDate(0, 0, -12)
		// Alice: free, then premium from `change`.
		r := env.Do("PUT", "/admin/users/alice", admin, map[string]any{"tier": "premium", "effectiveFrom": change.Format("2006-01-02")})
		if r.Status != 200 {
			t.Fatalf("set tier: %d %s", r.Status, r.Body)
		}
		rng := rand.New(rand.NewPCG(7, 11))
		bytesOn := map[string]int64{}
		var events []map[string]any
		for i := range 400 {
			at := from.Add(time.Duration(rng.Int64N(int64(30 * 24 * time.Hour)))).Add(time.Minute)
			p := []string{"a1", "a2", "b1"}[i%3]
			sent, recv := rng.Int64N(5_000_000_000), rng.Int64N(2_000_000_000)
			events = append(events, map[string]any{"proxyId": p, "eventType": "data_transfer", "timestamp": at.Format(time.RFC3339Nano),
				"eventId": fmt.Sprintf("e%d", i), "eventData": map[string]any{"bytesSent": sent, "bytesReceived": recv}})
			if p != "b1" {
				bytesOn[at.Format("2006-01-02")] += sent + recv
			}
		}
		// Retried duplicates must not be billed twice.
		events = append(events, events[:20]...)
		if r := env.Do("POST", "/proxy/usage/events", admin, map[string]any{"events": events}); r.Status != 201 {
			t.Fatalf("ingest: %d %s", r.Status, r.Body)
		}
		tierOn := func(d time.Time) string {
			if d.Before(change) {
				return "free"
			}
			return "premium"
		}
		base := map[string]string{"free": "0", "premium": "10.00"}
		perGB := map[string]string{"free": "0", "premium": "0.01"}
		wantItems, wantTotal := refBill(from, today, tierOn, func(d string) *big.Int { return big.NewInt(bytesOn[d]) }, base, perGB)

		var bill struct {
			UserID, Currency, Tier string
			Tiers                  []struct{ Tier, From, To string }
			CustomPricing          bool
			LineItems              []struct{ Description, Quantity, Unit, UnitPrice, Amount string }
			Total                  *string
		}
		path := fmt.Sprintf("/proxy/usage/billing?periodStart=%s&periodEnd=%s", from.Format("2006-01-02"), today.Format("2006-01-02"))
		r = env.Do("GET", path, alice, nil)
		if r.Status != 200 {
			t.Fatalf("bill: %d %s", r.Status, r.Body)
		}
		r.Decode(t, &bill)
		var got []string
		sum := new(big.Rat)
		for _, li := range bill.LineItems {
			got = append(got, li.Amount)
			a, _ := new(big.Rat).SetString(li.Amount)
			sum.Add(sum, a)
		}
		if fmt.Sprint(got) != fmt.Sprint(wantItems) || bill.Total == nil || *bill.Total != wantTotal {
			t.Fatalf("bill %v total %v, want %v total %s\n%s", got, bill.Total, wantItems, wantTotal, r.Body)
		}
		if sum.FloatString(2) != *bill.Total {
			t.Fatalf("total %s is not the sum of the items %s", *bill.Total, sum.FloatString(2))
		}
		if bill.Tier != "premium" || len(bill.Tiers) != 2 || bill.Tiers[0].Tier != "free" || bill.Tiers[1].From != change.Format("2006-01-02") {
			t.Fatalf("tiers: %s", r.Body)
		}
		// The bill agrees with the report it is computed from.
		rep := env.Do("GET", fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s", from.Format("2006-01-02"), today.Format("2006-01-02")), alice, nil)
		var totalBytes int64
		for _, v := range bytesOn {
			totalBytes += v
		}
		if got := rep.JSON(t)["totals"].(map[string]any)["totalBytes"]; got != float64(totalBytes) {
			t.Fatalf("report totalBytes %v, want %d", got, totalBytes)
		}
		// An admin bills alice the same; alice may not bill bob; bad input.
		if r := env.Do("GET", path+"&userId=alice", admin, nil); r.Status != 200 || string(r.Body) != string(env.Do("GET", path, alice, nil).Body) {
			t.Fatalf("admin bill differs: %s", r.Body)
		}
		env.Do("GET", path+"&userId=bob", alice, nil).ExpectError(t, 403, "PROXY_USAGE_005")
		for _, q := range []string{"periodStart=2026-13-01&periodEnd=2026-12-31", "periodStart=2026-02-01&periodEnd=2026-01-01",
			"periodStart=2025-01-01&periodEnd=2026-12-31", "periodEnd=2026-01-01", "periodStart=2026-1-1&periodEnd=2026-01-02"} {
			env.Do("GET", "/proxy/usage/billing?"+q, alice, nil).ExpectError(t, 400, "PROXY_USAGE_001")
		}
	})
}

func TestAdminAccounts(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	admin := apptest.Token(t, "root", "admin")
	alice := apptest.Token(t, "alice")
	svc := apptest.Token(t, "ingest", "service")
	for _, tok := range []string{alice, svc} {
		env.Do("PUT", "/admin/users/alice", tok, map[string]any{"tier": "premium"}).ExpectError(t, 403, "PROXY_USAGE_005")
		env.Do("GET", "/admin/users/alice", tok, nil).ExpectError(t, 403, "PROXY_USAGE_005")
	}
	env.Do("GET", "/admin/users/nobody", admin, nil).ExpectError(t, 404, "PROXY_USAGE_006")
	for name, body := range map[string]string{
		"bad tier":           `{"tier":"gold"}`,
		"bad date":           `{"tier":"premium","effectiveFrom":"01/02/2026"}`,
		"effectiveFrom only": `{"effectiveFrom":"2026-01-01"}`,
		"negative contract":  `{"contract":{"baseMonthly":"-1","perGB":"0.1"}}`,
		"float contract":     `{"contract":{"baseMonthly":500,"perGB":"0.1"}}`,
		"bad currency":       `{"contract":{"baseMonthly":"1","perGB":"0.1","currency":"dollars"}}`,
		"unknown field":      `{"tier":"premium","plan":"x"}`,
	} {
		t.Run(name, func(t *testing.T) {
			env.Do("PUT", "/admin/users/carol", admin, body).ExpectError(t, 400, "PROXY_USAGE_001")
		})
	}
	if n := env.Count(`SELECT count(*) FROM users WHERE id = 'carol'`); n != 0 {
		t.Fatal("refused update created the user")
	}
	// Creates the user; history in order; tier in effect today; contract.
	env.Do("PUT", "/admin/users/carol", admin, map[string]any{"tier": "premium", "effectiveFrom": "2025-01-01"})
	r := env.Do("PUT", "/admin/users/carol", admin, map[string]any{"tier": "enterprise", "effectiveFrom": "2099-01-01",
		"contract": map[string]string{"baseMonthly": "500.00", "perGB": "0.005", "currency": "USD"}})
	var acc struct {
		UserID      string
		Tier        string
		TierHistory []struct{ Tier, EffectiveFrom string }
		Contract    *struct{ BaseMonthly, PerGB, Currency string }
	}
	r.Decode(t, &acc)
	if r.Status != 200 || acc.Tier != "premium" || len(acc.TierHistory) != 2 || acc.TierHistory[1].Tier != "enterprise" ||
		acc.Contract == nil || acc.Contract.BaseMonthly != "500.00" || acc.Contract.PerGB != "0.005" {
		t.Fatalf("account: %d %s", r.Status, r.Body)
	}
	if g := env.Do("GET", "/admin/users/carol", admin, nil); string(g.Body) != string(r.Body) {
		t.Fatalf("GET differs from PUT: %s vs %s", g.Body, r.Body)
	}
	// Enterprise without a contract: contact sales, no total.
	env.Do("PUT", "/admin/users/dave", admin, map[string]any{"tier": "enterprise", "effectiveFrom": "2020-01-01"})
	dave := apptest.Token(t, "dave")
	bill := env.Do("GET", "/proxy/usage/billing?periodStart=2026-01-01&periodEnd=2026-01-31", dave, nil).JSON(t)
	if bill["customPricing"] != true || bill["total"] != nil {
		t.Fatalf("custom bill: %v", bill)
	}
}
