package usage

import (
	"time"

	"proxyusage/internal/apperr"
)

// DateLayout is the API's date format (UTC days).
const DateLayout = "2006-01-02"

// MaxPeriodDays bounds a requested range.
const MaxPeriodDays = 366

// Period is an inclusive range of UTC days. The transport parses its ends
// from whatever names they have there (startDate, periodStart, ...);
// Validate holds the rules of a period whichever request carries it.
type Period struct {
	Start, End time.Time
}

// Days is the number of days in the period.
func (p Period) Days() int { return int(p.End.Sub(p.Start)/(24*time.Hour)) + 1 }

// ProxyDays is the weight of a read of proxies over the period, what
// fairshare.Gate admits reads by: their cost grows with both.
func (p Period) ProxyDays(proxies int) int64 { return int64(proxies) * int64(p.Days()) }

// Validate checks that both ends are UTC days, the end is not before the
// start and the period spans at most MaxPeriodDays.
func (p Period) Validate() error {
	if !isDay(p.Start) || !isDay(p.End) {
		return apperr.Errorf(apperr.Invalid, "a period's start and end must be dates (YYYY-MM-DD)")
	}
	if p.End.Before(p.Start) {
		return apperr.Errorf(apperr.Invalid, "the start date must not be after the end date")
	}
	if p.Days() > MaxPeriodDays {
		return apperr.Errorf(apperr.Invalid, "a range covers at most %d days", MaxPeriodDays)
	}
	return nil
}

// isDay reports whether t is a UTC midnight.
func isDay(t time.Time) bool {
	h, m, sec := t.Clock()
	return t.Location() == time.UTC && h == 0 && m == 0 && sec == 0 && t.Nanosecond() == 0
}
