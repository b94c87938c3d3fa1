package usage

import (
	"time"

	"proxyusage/internal/apperr"
)

// DateLayout is the API's date format (UTC days).
const DateLayout = "2006-01-02"

// MaxPeriodDays bounds a requested range.
const MaxPeriodDays = 366

// Period is an inclusive range of UTC days.
type Period struct {
	Start, End time.Time
}

// Days is the number of days in the period.
func (p Period) Days() int { return int(p.End.Sub(p.Start)/(24*time.Hour)) + 1 }

// ParseDate parses a YYYY-MM-DD date parameter.
func ParseDate(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, apperr.Errorf(apperr.Invalid, "%s is required (YYYY-MM-DD)", name)
	}
	t, err := time.Parse(DateLayout, s)
	if err != nil || len(s) != len(DateLayout) {
		return time.Time{}, apperr.Errorf(apperr.Invalid, "%s must be a date in YYYY-MM-DD format", name)
	}
	return t.UTC(), nil
}

// ParsePeriod validates a start and end date parameter pair.
func ParsePeriod(startName, start, endName, end string) (Period, error) {
	s, err := ParseDate(startName, start)
	if err != nil {
		return Period{}, err
	}
	e, err := ParseDate(endName, end)
	if err != nil {
		return Period{}, err
	}
	if e.Before(s) {
		return Period{}, apperr.Errorf(apperr.Invalid, "%s must not be after %s", startName, endName)
	}
	p := Period{Start: s, End: e}
	if p.Days() > MaxPeriodDays {
		return Period{}, apperr.Errorf(apperr.Invalid, "a range covers at most %d days", MaxPeriodDays)
	}
	return p, nil
}
