// Package billing turns daily usage into bills: plans as data, exact
// decimal money, base fees prorated per day and data charged per GB under
// the tier in effect each day.
package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/limit"
	"proxyusage/internal/user"
)

// Plan is a tier's pricing. Custom plans (enterprise) are priced by a
// per-user contract.
type Plan struct {
	BaseMonthly decimal.Decimal `json:"baseMonthly"`
	PerGB       decimal.Decimal `json:"perGB"`
	Custom      bool            `json:"custom"`
	// MonthlyLimitGB is the plan's usage limit per calendar month (none
	// when absent); an admin's limit for a user overrides it.
	MonthlyLimitGB *decimal.Decimal `json:"monthlyLimitGB,omitempty"`
	// LimitEnforcement is "hard" (default: the edge refuses new
	// connections once the limit is reached) or "soft" (alerts only).
	LimitEnforcement string `json:"limitEnforcement,omitempty"`
	// AlertPercents are the plan limit's alert thresholds (default 80, 100).
	AlertPercents []int `json:"alertPercents,omitempty"`
}

// Limit is the limit tier's plan carries, nil for none.
func (p Plans) Limit(tier string) *limit.Limit {
	plan, ok := p.Tiers[tier]
	if !ok || plan.MonthlyLimitGB == nil {
		return nil
	}
	l, err := plan.limitInput().Parse()
	if err != nil {
		return nil // Validate refused such plans at load
	}
	return &l
}

// LimitedTiers are the tiers whose plan carries a limit.
func (p Plans) LimitedTiers() []string {
	var out []string
	for tier, plan := range p.Tiers {
		if plan.MonthlyLimitGB != nil {
			out = append(out, tier)
		}
	}
	return out
}

func (p Plan) limitInput() limit.Input {
	return limit.Input{MonthlyGB: p.MonthlyLimitGB.String(), Enforcement: p.LimitEnforcement, AlertPercents: p.AlertPercents}
}

// Plans is the pricing of every tier, in one currency.
type Plans struct {
	Currency string          `json:"currency"`
	Tiers    map[string]Plan `json:"plans"`
}

// DefaultPlans are the built-in plans (docs/billing.md, "Plans").
func DefaultPlans() Plans {
	return Plans{
		Currency: "USD",
		Tiers: map[string]Plan{
			user.TierFree:       {BaseMonthly: decimal.Zero, PerGB: decimal.Zero},
			user.TierPremium:    {BaseMonthly: decimal.RequireFromString("10.00"), PerGB: decimal.RequireFromString("0.01")},
			user.TierEnterprise: {Custom: true},
		},
	}
}

var currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate reports every problem with the plans at once.
func (p Plans) Validate() error {
	var errs []error
	if !currencyPattern.MatchString(p.Currency) {
		errs = append(errs, fmt.Errorf("currency %q must be a 3-letter ISO 4217 code", p.Currency))
	}
	for _, tier := range []string{user.TierFree, user.TierPremium, user.TierEnterprise} {
		plan, ok := p.Tiers[tier]
		if !ok {
			errs = append(errs, fmt.Errorf("plan %q is missing", tier))
			continue
		}
		if plan.BaseMonthly.IsNegative() || plan.PerGB.IsNegative() {
			errs = append(errs, fmt.Errorf("plan %q: prices must not be negative", tier))
		}
		if plan.MonthlyLimitGB != nil {
			if _, err := plan.limitInput().Parse(); err != nil {
				errs = append(errs, fmt.Errorf("plan %q: %s", tier, apperr.MessageOf(err)))
			}
		} else if plan.LimitEnforcement != "" || plan.AlertPercents != nil {
			errs = append(errs, fmt.Errorf("plan %q: limitEnforcement and alertPercents need monthlyLimitGB", tier))
		}
	}
	for tier := range p.Tiers {
		switch tier {
		case user.TierFree, user.TierPremium, user.TierEnterprise:
		default:
			errs = append(errs, fmt.Errorf("unknown tier %q (want free, premium, enterprise)", tier))
		}
	}
	return errors.Join(errs...)
}

// LoadPlans reads a JSON plans file; an empty path gives the defaults.
//
//	{"currency": "USD", "plans": {
//	  "free":       {"baseMonthly": "0",     "perGB": "0"},
//	  "premium":    {"baseMonthly": "10.00", "perGB": "0.01"},
//	  "enterprise": {"custom": true}}}
func LoadPlans(path string) (Plans, error) {
	if path == "" {
		return DefaultPlans(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Plans{}, fmt.Errorf("PLANS_FILE: %w", err)
	}
	var p Plans
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Plans{}, fmt.Errorf("PLANS_FILE %s: %w", path, err)
	}
	if err := p.Validate(); err != nil {
		return Plans{}, fmt.Errorf("PLANS_FILE %s: %w", path, err)
	}
	return p, nil
}
