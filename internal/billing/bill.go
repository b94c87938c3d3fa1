package billing

import (
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/exact"
	"proxyusage/internal/user"
)

// Contract is an enterprise user's custom pricing.
type Contract struct {
	BaseMonthly decimal.Decimal `json:"baseMonthly"`
	PerGB       decimal.Decimal `json:"perGB"`
	Currency    string          `json:"currency"`
}

// ContractJSON is a contract as served: amounts as decimal strings.
type ContractJSON struct {
	BaseMonthly string `json:"baseMonthly"`
	PerGB       string `json:"perGB"`
	Currency    string `json:"currency"`
}

// JSON returns the served form of c.
func (c Contract) JSON() ContractJSON {
	return ContractJSON{BaseMonthly: price(c.BaseMonthly), PerGB: price(c.PerGB), Currency: c.Currency}
}

// DatedContract is an entry of a user's contract history: the contract in
// effect from EffectiveFrom (a UTC day) until the next entry.
type DatedContract struct {
	EffectiveFrom time.Time
	Contract
}

// Contracts is a contract history, ascending by EffectiveFrom.
type Contracts []DatedContract

// On returns the contract in effect on day: the latest entry on or before
// it. Days before the first entry take the first: a contract set today
// also prices earlier enterprise days that had none (as a contract did
// before contracts had dates), and changes apply from their date on.
func (cs Contracts) On(day time.Time) (*Contract, int) {
	if len(cs) == 0 {
		return nil, -1
	}
	i := 0
	for j, c := range cs {
		if c.EffectiveFrom.After(day) {
			break
		}
		i = j
	}
	return &cs[i].Contract, i
}

// Input is what a bill is computed from.
type Input struct {
	UserID     string
	Start, End time.Time // inclusive UTC days
	History    user.History
	Contracts  Contracts
	DailyBytes map[time.Time]exact.Sum // totalBytes per UTC day
}

// LineItem is one charge. Quantities and prices are decimal strings.
type LineItem struct {
	Description string `json:"description"`
	Quantity    string `json:"quantity"`
	Unit        string `json:"unit"`
	UnitPrice   string `json:"unitPrice"`
	Amount      string `json:"amount"`
}

// TierSpan is a run of days under one tier, clipped to the period.
type TierSpan struct {
	Tier string `json:"tier"`
	From string `json:"from"`
	To   string `json:"to"`
}

// Bill is a billing summary (docs/billing.md).
type Bill struct {
	UserID        string     `json:"userId"`
	PeriodStart   string     `json:"periodStart"`
	PeriodEnd     string     `json:"periodEnd"`
	Currency      string     `json:"currency"`
	Tier          string     `json:"tier"`
	Tiers         []TierSpan `json:"tiers"`
	CustomPricing bool       `json:"customPricing"`
	Message       string     `json:"message,omitempty"`
	LineItems     []LineItem `json:"lineItems"`
	Total         *string    `json:"total"`
}

const dateLayout = "2006-01-02"

var gbExp int32 = -9 // 1 GB = 10^9 bytes

// piece is a run of days under one tier (and, for custom pricing, one
// contract) within one month.
type piece struct {
	tier     string
	contract int // index into the contract history; -1 for none or a non-custom tier
	from, to time.Time
	days     int64
	bytes    exact.Sum
}

func daysIn(t time.Time) int64 {
	return int64(time.Date(t.Year(), t.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day())
}

// Compute bills in exactly. The period is cut at every tier change, contract
// change (on custom-priced days) and month boundary; each piece gives a base item (days / days-in-month of the
// monthly base) and a data item (its GB at the per-GB price). Every amount
// is the exact product rounded half-up to cents once; zero items are left
// out; the total is the sum of the amounts.
func Compute(plans Plans, in Input) (Bill, error) {
	bill := Bill{
		UserID: in.UserID, PeriodStart: in.Start.Format(dateLayout), PeriodEnd: in.End.Format(dateLayout),
		Tier: in.History.On(in.End), Tiers: []TierSpan{}, LineItems: []LineItem{},
	}
	var pieces []*piece
	for d := in.Start; !d.After(in.End); d = d.AddDate(0, 0, 1) {
		tier := in.History.On(d)
		contract := -1
		if plans.Tiers[tier].Custom {
			_, contract = in.Contracts.On(d)
		}
		last := len(pieces) - 1
		if last < 0 || pieces[last].tier != tier || pieces[last].contract != contract ||
			pieces[last].from.Month() != d.Month() || pieces[last].from.Year() != d.Year() {
			pieces = append(pieces, &piece{tier: tier, contract: contract, from: d})
			last++
		}
		p := pieces[last]
		p.to = d
		p.days++
		p.bytes = p.bytes.Add(in.DailyBytes[d])
		if n := len(bill.Tiers); n == 0 || bill.Tiers[n-1].Tier != tier {
			bill.Tiers = append(bill.Tiers, TierSpan{Tier: tier, From: d.Format(dateLayout)})
		}
		bill.Tiers[len(bill.Tiers)-1].To = d.Format(dateLayout)
	}

	currencies := map[string]bool{}
	total := decimal.Zero
	for _, p := range pieces {
		plan, ok := plans.Tiers[p.tier]
		if !ok {
			return Bill{}, fmt.Errorf("billing: no plan for tier %q", p.tier)
		}
		base, perGB, currency := plan.BaseMonthly, plan.PerGB, plans.Currency
		if plan.Custom {
			if p.contract < 0 {
				bill.CustomPricing = true
				continue
			}
			c := in.Contracts[p.contract]
			base, perGB, currency = c.BaseMonthly, c.PerGB, c.Currency
		}
		name := titleCase(p.tier)
		span := fmt.Sprintf("%s to %s", p.from.Format(dateLayout), p.to.Format(dateLayout))
		dim := daysIn(p.from)
		// Exact fraction base × days / dim, rounded once.
		baseAmount := base.Mul(decimal.NewFromInt(p.days)).DivRound(decimal.NewFromInt(dim), 2)
		gb := decimal.NewFromBigInt(p.bytes.BigInt(), gbExp)
		dataAmount := gb.Mul(perGB).Round(2)
		if !baseAmount.IsZero() {
			bill.LineItems = append(bill.LineItems, LineItem{
				Description: fmt.Sprintf("%s base fee, %s (%d of %d days)", name, span, p.days, dim),
				Quantity:    decimal.NewFromInt(p.days).DivRound(decimal.NewFromInt(dim), 6).StringFixed(6),
				Unit:        "month", UnitPrice: price(base), Amount: baseAmount.StringFixed(2),
			})
			currencies[currency] = true
		}
		if !dataAmount.IsZero() {
			bill.LineItems = append(bill.LineItems, LineItem{
				Description: fmt.Sprintf("%s data transfer, %s", name, span),
				Quantity:    gb.StringFixed(9), Unit: "GB", UnitPrice: price(perGB), Amount: dataAmount.StringFixed(2),
			})
			currencies[currency] = true
		}
		total = total.Add(baseAmount).Add(dataAmount)
	}
	switch len(currencies) {
	case 0:
		bill.Currency = plans.Currency
		if c, _ := in.Contracts.On(in.End); c != nil && bill.Tier == user.TierEnterprise {
			bill.Currency = c.Currency
		}
	case 1:
		for c := range currencies {
			bill.Currency = c
		}
	default:
		return Bill{}, apperr.Errorf(apperr.Conflict, "the period mixes currencies (plan and contract); bill the parts separately")
	}
	if bill.CustomPricing {
		bill.Message = "Enterprise usage is priced by contract: contact sales."
		return bill, nil
	}
	t := total.StringFixed(2)
	bill.Total = &t
	return bill, nil
}

// price shows a unit price with at least two decimal places and all of its
// significant ones ("10.00", "0.01", "0.005").
func price(d decimal.Decimal) string {
	places := max(int32(2), -d.Exponent())
	s := d.StringFixed(places)
	// Trim insignificant zeros beyond two places.
	if i := strings.IndexByte(s, '.'); i >= 0 {
		for len(s) > i+3 && s[len(s)-1] == '0' {
			s = s[:len(s)-1]
		}
	}
	return s
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
