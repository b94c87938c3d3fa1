package billing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"proxyusage/internal/exact"
	"proxyusage/internal/user"
)

func d(s string) time.Time {
	t, err := time.Parse(dateLayout, s)
	if err != nil {
		panic(err)
	}
	return t
}

// everyDay spreads n bytes on each day from..to.
func everyDay(from, to string, n uint64) map[time.Time]exact.Sum {
	m := map[time.Time]exact.Sum{}
	for t := d(from); !t.After(d(to)); t = t.AddDate(0, 0, 1) {
		m[t] = exact.Of(n)
	}
	return m
}

func hist(changes ...string) user.History {
	var h user.History
	for i := 0; i+1 < len(changes); i += 2 {
		h = append(h, user.TierChange{Tier: changes[i+1], EffectiveFrom: d(changes[i])})
	}
	return h
}

func TestCompute(t *testing.T) {
	premium := hist("2020-01-01", "premium")
	contract := Contracts{{Contract: Contract{BaseMonthly: decimal.RequireFromString("500.00"), PerGB: decimal.RequireFromString("0.005"), Currency: "USD"}}}
	cases := []struct {
		name    string
		plans   Plans
		in      Input
		amounts []string // line item amounts in order
		total   string   // "" means no total (custom pricing)
		tiers   int
		checkFn func(t *testing.T, b Bill)
	}{
		{name: "premium full month, 123.456789 GB",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: premium, DailyBytes: map[time.Time]exact.Sum{d("2026-01-15"): exact.Of(123_456_789_000)}},
			amounts: []string{"10.00", "1.23"}, total: "11.23", tiers: 1,
			checkFn: func(t *testing.T, b Bill) {
				if b.LineItems[0].Quantity != "1.000000" || b.LineItems[0].Unit != "month" || b.LineItems[0].UnitPrice != "10.00" {
					t.Errorf("base item %+v", b.LineItems[0])
				}
				if b.LineItems[1].Quantity != "123.456789000" || b.LineItems[1].Unit != "GB" || b.LineItems[1].UnitPrice != "0.01" {
					t.Errorf("data item %+v", b.LineItems[1])
				}
			}},
		{name: "partial month prorated by day",
			in:      Input{Start: d("2026-01-10"), End: d("2026-01-20"), History: premium},
			amounts: []string{"3.55"}, total: "3.55", tiers: 1, // 10 × 11/31 = 3.548…
			checkFn: func(t *testing.T, b Bill) {
				if b.LineItems[0].Quantity != "0.354839" {
					t.Errorf("quantity %s", b.LineItems[0].Quantity)
				}
			}},
		{name: "across two months",
			in:      Input{Start: d("2026-01-25"), End: d("2026-02-05"), History: premium},
			amounts: []string{"2.26", "1.79"}, total: "4.05", tiers: 1}, // 70/31, 50/28
		{name: "leap February in full is exactly the base",
			in:      Input{Start: d("2028-02-01"), End: d("2028-02-29"), History: premium},
			amounts: []string{"10.00"}, total: "10.00", tiers: 1},
		{name: "half of a leap February",
			in:      Input{Start: d("2028-02-15"), End: d("2028-02-29"), History: premium},
			amounts: []string{"5.17"}, total: "5.17", tiers: 1}, // 150/29 = 5.172…
		{name: "free to premium mid-month",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: hist("2026-01-16", "premium"), DailyBytes: everyDay("2026-01-01", "2026-01-31", 1_000_000_000)},
			amounts: []string{"5.16", "0.16"}, total: "5.32", tiers: 2, // 160/31; 16 GB
			checkFn: func(t *testing.T, b Bill) {
				want := []TierSpan{{"free", "2026-01-01", "2026-01-15"}, {"premium", "2026-01-16", "2026-01-31"}}
				for i := range want {
					if b.Tiers[i] != want[i] {
						t.Errorf("tiers %v", b.Tiers)
					}
				}
				if b.Tier != "premium" {
					t.Errorf("tier %s", b.Tier)
				}
			}},
		{name: "premium to enterprise with contract",
			in: Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: hist("2020-01-01", "premium", "2026-01-21", "enterprise"),
				Contracts: contract, DailyBytes: everyDay("2026-01-01", "2026-01-31", 1_000_000_000)},
			// premium 200/31 = 6.4516, 20 GB × 0.01; enterprise 5500/31 = 177.419, 11 GB × 0.005 = 0.055 → 0.06
			amounts: []string{"6.45", "0.20", "177.42", "0.06"}, total: "184.13", tiers: 2,
			checkFn: func(t *testing.T, b Bill) {
				if b.LineItems[3].UnitPrice != "0.005" || b.LineItems[2].UnitPrice != "500.00" {
					t.Errorf("contract prices %+v", b.LineItems)
				}
			}},
		{name: "contract history: each day at the contract in effect that day",
			in: Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: hist("2020-01-01", "enterprise"),
				Contracts: Contracts{
					{EffectiveFrom: d("2025-12-01"), Contract: Contract{BaseMonthly: decimal.RequireFromString("500"), PerGB: decimal.RequireFromString("0.005"), Currency: "USD"}},
					{EffectiveFrom: d("2026-01-16"), Contract: Contract{BaseMonthly: decimal.RequireFromString("620"), PerGB: decimal.RequireFromString("0.004"), Currency: "USD"}},
					{EffectiveFrom: d("2026-02-01"), Contract: Contract{BaseMonthly: decimal.RequireFromString("9999"), PerGB: decimal.RequireFromString("9"), Currency: "USD"}},
				},
				DailyBytes: everyDay("2026-01-01", "2026-01-31", 1_000_000_000)},
			// 500 × 15/31 = 241.935…; 15 GB × 0.005; 620 × 16/31 = 320; 16 GB × 0.004 = 0.064
			amounts: []string{"241.94", "0.08", "320.00", "0.06"}, total: "562.08", tiers: 1,
			checkFn: func(t *testing.T, b Bill) {
				if b.LineItems[0].UnitPrice != "500.00" || b.LineItems[2].UnitPrice != "620.00" || b.LineItems[3].UnitPrice != "0.004" {
					t.Errorf("prices %+v", b.LineItems)
				}
			}},
		{name: "contract set later also prices earlier enterprise days",
			in: Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: hist("2020-01-01", "enterprise"),
				Contracts: Contracts{{EffectiveFrom: d("2026-03-10"), Contract: Contract{BaseMonthly: decimal.RequireFromString("310"), PerGB: decimal.Zero, Currency: "USD"}}}},
			amounts: []string{"310.00"}, total: "310.00", tiers: 1},
		{name: "zero usage on free",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-31")},
			amounts: nil, total: "0.00", tiers: 1},
		{name: "one byte is not a cent",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-01"), History: premium, DailyBytes: map[time.Time]exact.Sum{d("2026-01-01"): exact.Of(1)}},
			amounts: []string{"0.32"}, total: "0.32", tiers: 1},
		{name: "a petabyte",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: premium, DailyBytes: map[time.Time]exact.Sum{d("2026-01-31"): exact.Of(1_000_000_000_000_000)}},
			amounts: []string{"10.00", "10000.00"}, total: "10010.00", tiers: 1},
		{name: "half a cent of data rounds up",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: hist("2020-01-01", "premium"), DailyBytes: map[time.Time]exact.Sum{d("2026-01-02"): exact.Of(500_000_000)}},
			amounts: []string{"10.00", "0.01"}, total: "10.01", tiers: 1},
		{name: "half a cent of base rounds up",
			plans: Plans{Currency: "USD", Tiers: map[string]Plan{
				"free": {}, "premium": {BaseMonthly: decimal.RequireFromString("0.01")}, "enterprise": {Custom: true}}},
			in:      Input{Start: d("2026-02-01"), End: d("2026-02-14"), History: premium},
			amounts: []string{"0.01"}, total: "0.01", tiers: 1}, // 0.01 × 14/28 = 0.005
		{name: "rounding is on the exact fraction, not the shown quantity",
			plans: Plans{Currency: "USD", Tiers: map[string]Plan{
				"free": {}, "premium": {BaseMonthly: decimal.RequireFromString("1000000")}, "enterprise": {Custom: true}}},
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-01"), History: premium},
			amounts: []string{"32258.06"}, total: "32258.06", tiers: 1}, // 1e6/31 = 32258.0645…; 0.032258 × 1e6 would be 32258.00
		{name: "enterprise without contract: contact sales",
			in:      Input{Start: d("2026-01-01"), End: d("2026-01-31"), History: hist("2020-01-01", "enterprise"), DailyBytes: everyDay("2026-01-01", "2026-01-31", 5)},
			amounts: nil, total: "", tiers: 1,
			checkFn: func(t *testing.T, b Bill) {
				if !b.CustomPricing || !strings.Contains(b.Message, "contact sales") {
					t.Errorf("bill %+v", b)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plans := c.plans
			if plans.Tiers == nil {
				plans = DefaultPlans()
			}
			b, err := Compute(plans, c.in)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			sum := decimal.Zero
			for _, li := range b.LineItems {
				got = append(got, li.Amount)
				sum = sum.Add(decimal.RequireFromString(li.Amount))
			}
			if strings.Join(got, ",") != strings.Join(c.amounts, ",") {
				t.Fatalf("amounts %v, want %v (%+v)", got, c.amounts, b.LineItems)
			}
			switch {
			case c.total == "" && b.Total != nil:
				t.Fatalf("total %s, want none", *b.Total)
			case c.total != "" && (b.Total == nil || *b.Total != c.total):
				t.Fatalf("total %v, want %s", b.Total, c.total)
			case b.Total != nil && sum.StringFixed(2) != *b.Total:
				t.Fatalf("total %s is not the sum of line items %s", *b.Total, sum.StringFixed(2))
			}
			if len(b.Tiers) != c.tiers {
				t.Fatalf("tiers %v", b.Tiers)
			}
			if c.checkFn != nil {
				c.checkFn(t, b)
			}
		})
	}
}

func TestLoadPlans(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "plans.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p, err := LoadPlans(write(`{"currency":"EUR","plans":{"free":{"baseMonthly":"0","perGB":"0"},
		"premium":{"baseMonthly":"12.50","perGB":"0.02"},"enterprise":{"custom":true}}}`))
	if err != nil || p.Currency != "EUR" || !p.Tiers["premium"].BaseMonthly.Equal(decimal.RequireFromString("12.5")) {
		t.Fatalf("plans %+v, %v", p, err)
	}
	for name, body := range map[string]string{
		"not json":          `currency: USD`,
		"missing tier":      `{"currency":"USD","plans":{"free":{},"premium":{}}}`,
		"negative price":    `{"currency":"USD","plans":{"free":{},"premium":{"perGB":"-1"},"enterprise":{"custom":true}}}`,
		"bad currency":      `{"currency":"usd","plans":{"free":{},"premium":{},"enterprise":{"custom":true}}}`,
		"unknown tier":      `{"currency":"USD","plans":{"free":{},"premium":{},"enterprise":{},"gold":{}}}`,
		"unknown field":     `{"currency":"USD","plan":{}}`,
		"non-decimal price": `{"currency":"USD","plans":{"free":{},"premium":{"perGB":"cheap"},"enterprise":{}}}`,
	} {
		if _, err := LoadPlans(write(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := LoadPlans(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
	if p, err := LoadPlans(""); err != nil || !p.Tiers["premium"].PerGB.Equal(decimal.RequireFromString("0.01")) {
		t.Fatalf("defaults %+v %v", p, err)
	}
}

func BenchmarkCompute(b *testing.B) {
	in := Input{Start: d("2026-01-01"), End: d("2026-12-31"), History: hist("2026-03-01", "premium", "2026-09-01", "enterprise"),
		Contracts:  Contracts{{Contract: Contract{BaseMonthly: decimal.RequireFromString("500"), PerGB: decimal.RequireFromString("0.005"), Currency: "USD"}}},
		DailyBytes: everyDay("2026-01-01", "2026-12-31", 123_456_789_012)}
	for b.Loop() {
		if _, err := Compute(DefaultPlans(), in); err != nil {
			b.Fatal(err)
		}
	}
}
