// Package limit is usage limits per user per calendar month (UTC): the
// limit a user is held to (their own, set by an admin, else their plan's),
// how much of it the month has used, and whether the edge may open a new
// connection for one of their proxies.
//
// Metering never refuses an event because of a limit (the traffic already
// happened and is billed); a limit informs the edge and drives alerts.
package limit

import (
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
)

// Enforcement of a limit: a hard limit tells the edge to refuse new
// connections once it is reached; a soft one only alerts.
const (
	Hard = "hard"
	Soft = "soft"
)

// Bounds of a limit as an admin or the plans file may set it.
const (
	MaxAlertPercents = 10   // thresholds per limit
	MaxPercent       = 1000 // a threshold may be far past the limit (soft limits)
	MaxGBDecimals    = 9    // 10^-9 GB is one byte
)

// MaxMonthlyGB is the largest monthly limit: 10^9 GB (an exabyte).
var MaxMonthlyGB = decimal.New(1, 9)

// DefaultAlertPercents are the thresholds of a limit that names none.
func DefaultAlertPercents() []int { return []int{80, 100} }

// Limit is a monthly allowance in GB (10^9 bytes of totalBytes).
type Limit struct {
	MonthlyGB     decimal.Decimal
	Enforcement   string
	AlertPercents []int // ascending, distinct
}

// JSON is a limit as served and as sent.
type JSON struct {
	MonthlyGB     string `json:"monthlyGB"`
	Enforcement   string `json:"enforcement"`
	AlertPercents []int  `json:"alertPercents"`
}

// JSON returns the served form of l.
func (l Limit) JSON() JSON {
	return JSON{MonthlyGB: gbString(l.MonthlyGB), Enforcement: l.Enforcement, AlertPercents: slices.Clone(l.AlertPercents)}
}

// Input is a limit as sent: monthlyGB is required, enforcement defaults to
// hard and alertPercents (nil) to DefaultAlertPercents.
type Input struct {
	MonthlyGB     string `json:"monthlyGB"`
	Enforcement   string `json:"enforcement"`
	AlertPercents []int  `json:"alertPercents"`
}

// Parse validates in, in the order its fields are documented, and returns
// the limit it describes.
func (in Input) Parse() (Limit, error) {
	gb, err := ParseGB("limits.monthlyGB", in.MonthlyGB)
	if err != nil {
		return Limit{}, err
	}
	l := Limit{MonthlyGB: gb, Enforcement: in.Enforcement}
	switch in.Enforcement {
	case "":
		l.Enforcement = Hard
	case Hard, Soft:
	default:
		return Limit{}, apperr.Errorf(apperr.Invalid, `limits.enforcement must be "hard" or "soft"`)
	}
	if in.AlertPercents == nil {
		l.AlertPercents = DefaultAlertPercents()
		return l, nil
	}
	if len(in.AlertPercents) > MaxAlertPercents {
		return Limit{}, apperr.Errorf(apperr.Invalid, "limits.alertPercents may name at most %d thresholds", MaxAlertPercents)
	}
	l.AlertPercents = slices.Clone(in.AlertPercents)
	slices.Sort(l.AlertPercents)
	for i, p := range l.AlertPercents {
		if p < 1 || p > MaxPercent {
			return Limit{}, apperr.Errorf(apperr.Invalid, "limits.alertPercents must be integers from 1 to %d", MaxPercent)
		}
		if i > 0 && l.AlertPercents[i-1] == p {
			return Limit{}, apperr.Errorf(apperr.Invalid, "limits.alertPercents names %d twice", p)
		}
	}
	return l, nil
}

// ParseGB reads a GB amount: a decimal string greater than 0 and at most
// MaxMonthlyGB, with at most MaxGBDecimals places and no sign or exponent.
func ParseGB(field, s string) (decimal.Decimal, error) {
	bad := apperr.Errorf(apperr.Invalid, "%s must be a decimal string of GB greater than 0 and at most %s, with at most %d decimal places, e.g. \"50\"",
		field, MaxMonthlyGB.String(), MaxGBDecimals)
	if !plainDecimal(s) {
		return decimal.Decimal{}, bad
	}
	if fractionDigits(s) > MaxGBDecimals {
		return decimal.Decimal{}, bad
	}
	v, err := decimal.NewFromString(s)
	if err != nil || !v.IsPositive() || v.GreaterThan(MaxMonthlyGB) {
		return decimal.Decimal{}, bad
	}
	return v, nil
}

// plainDecimal reports whether s is digits with an optional fraction
// ("50", "0.5"): no sign, exponent, spaces or leading dot.
func plainDecimal(s string) bool {
	digits, dot := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && digits > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return digits > 0 && len(s) <= 40
}

func fractionDigits(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return len(s) - i - 1
		}
	}
	return 0
}

// bytesPerGB is 10^9: GB are decimal.
var bytesPerGB = decimal.New(1, 9)

// GB converts a byte count to GB, exactly.
func GB(bytes *big.Int) decimal.Decimal { return decimal.NewFromBigInt(bytes, -9) }

// gbString shows a limit in GB with the places it needs ("50", "0.5").
func gbString(d decimal.Decimal) string { return d.String() }

// UsedString shows used GB exactly, to 9 places (one byte).
func UsedString(bytes *big.Int) string { return GB(bytes).StringFixed(MaxGBDecimals) }

// Reached reports whether bytes reach percent of l's monthly limit:
// bytes ≥ monthlyGB × 10^9 × percent / 100, compared exactly.
func (l Limit) Reached(bytes *big.Int, percent int) bool {
	threshold := l.MonthlyGB.Mul(bytesPerGB).Mul(decimal.NewFromInt(int64(percent)))
	return decimal.NewFromBigInt(bytes, 0).Mul(decimal.NewFromInt(100)).GreaterThanOrEqual(threshold)
}

// Month is the calendar month (UTC) holding t, as its first day.
func Month(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// MonthEnd is the last day of the month starting at month.
func MonthEnd(month time.Time) time.Time { return month.AddDate(0, 1, -1) }

// monthString is the served form of a month: "2026-03".
func monthString(month time.Time) string { return month.Format("2006-01") }

// MonthString is the served form of a month: "2026-03".
func MonthString(month time.Time) string { return monthString(month) }

func errorf(format string, args ...any) error { return fmt.Errorf("limit: "+format, args...) }
