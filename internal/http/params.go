package http

import (
	"net/url"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/billing"
	"proxyusage/internal/limit"
	"proxyusage/internal/strictjson"
	"proxyusage/internal/usage"
)

// The transport's half of validation: parameters and bodies are parsed
// into the typed requests of the domain packages, with errors that name
// the parameter as the client sent it. The rules of the values themselves
// (a period's span, a grouping, who may ask) are the requests' Validate
// methods, run by the services.

// parseDate parses a YYYY-MM-DD date parameter (query, path or body
// member) into its UTC day.
func parseDate(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, apperr.Errorf(apperr.Invalid, "%s is required (YYYY-MM-DD)", name)
	}
	t, err := time.Parse(usage.DateLayout, s)
	if err != nil || len(s) != len(usage.DateLayout) {
		return time.Time{}, apperr.Errorf(apperr.Invalid, "%s must be a date in YYYY-MM-DD format", name)
	}
	return t.UTC(), nil
}

// parsePeriod parses a pair of date parameters into a period (its rules
// are usage.Period.Validate).
func parsePeriod(startName, start, endName, end string) (usage.Period, error) {
	s, err := parseDate(startName, start)
	if err != nil {
		return usage.Period{}, err
	}
	e, err := parseDate(endName, end)
	if err != nil {
		return usage.Period{}, err
	}
	return usage.Period{Start: s, End: e}, nil
}

// queryPeriod parses the period named startName and endName in q.
func queryPeriod(q url.Values, startName, endName string) (usage.Period, error) {
	return parsePeriod(startName, q.Get(startName), endName, q.Get(endName))
}

// snapshotBody is the body of POST /proxy/usage/aggregate.
type snapshotBody struct {
	PeriodStart string `json:"periodStart"`
	PeriodEnd   string `json:"periodEnd"`
	UserID      string `json:"userId"` // another user's period (admins); "" the caller's
}

func (b *snapshotBody) request() (usage.SnapshotRequest, error) {
	p, err := parsePeriod("periodStart", b.PeriodStart, "periodEnd", b.PeriodEnd)
	return usage.SnapshotRequest{UserID: b.UserID, Period: p}, err
}

// Validate checks what the transport parses: the dates' syntax.
func (b *snapshotBody) Validate() error {
	_, err := b.request()
	return err
}

// accountBody is the body of PUT /admin/users/{userId}. Every member is
// optional; what it omits stays as it was.
type accountBody struct {
	Tier          string `json:"tier"`
	EffectiveFrom string `json:"effectiveFrom"` // of the tier and the contract; default today
	// Contract: absent keeps the contract history, null removes it, a
	// contract applies from effectiveFrom on.
	Contract strictjson.Nullable[billing.ContractInput] `json:"contract"`
	// Limits: absent keeps the user's own limit, null removes it.
	Limits strictjson.Nullable[limit.Input] `json:"limits"`
}

func (b *accountBody) request(userID string) (billing.AccountUpdate, error) {
	u := billing.AccountUpdate{
		UserID:        userID,
		Tier:          b.Tier,
		ClearContract: b.Contract.Set && b.Contract.Null,
		ClearLimits:   b.Limits.Set && b.Limits.Null,
	}
	if b.Contract.Set && !b.Contract.Null {
		u.Contract = &b.Contract.Value
	}
	if b.Limits.Set && !b.Limits.Null {
		u.Limits = &b.Limits.Value
	}
	if b.EffectiveFrom != "" {
		var err error
		if u.EffectiveFrom, err = parseDate("effectiveFrom", b.EffectiveFrom); err != nil {
			return billing.AccountUpdate{}, err
		}
	}
	return u, nil
}

// Validate checks what the transport parses: the date's syntax.
func (b *accountBody) Validate() error {
	_, err := b.request("")
	return err
}
