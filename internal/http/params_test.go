package http

import (
	"testing"

	"proxyusage/internal/apperr"
	"proxyusage/internal/usage"
)

// parseValidPeriod is what every period parameter pair goes through: the
// transport's parsing, then the domain's rules.
func parseValidPeriod(start, end string) (usage.Period, error) {
	p, err := parsePeriod("startDate", start, "endDate", end)
	if err != nil {
		return p, err
	}
	return p, p.Validate()
}

func TestParsePeriod(t *testing.T) {
	ok := [][2]string{{"2026-01-01", "2026-01-01"}, {"2024-02-29", "2025-02-28"}, {"2025-01-01", "2026-01-01"}, {"0001-01-01", "0001-01-01"}}
	for _, c := range ok {
		if _, err := parseValidPeriod(c[0], c[1]); err != nil {
			t.Errorf("%v refused: %v", c, err)
		}
	}
	bad := [][2]string{{"", "2026-01-01"}, {"2026-01-01", ""}, {"2026-02-30", "2026-03-01"}, {"2026-1-1", "2026-01-02"},
		{"2026-01-02", "2026-01-01"}, {"2025-01-01", "2026-01-02"}, {"2026-01-01T00:00:00Z", "2026-01-02"}, {"20260101", "2026-01-02"}}
	for _, c := range bad {
		_, err := parseValidPeriod(c[0], c[1])
		if err == nil {
			t.Errorf("%v accepted", c)
		} else if apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("%v: code %s, want %s", c, apperr.CodeOf(err), apperr.Invalid)
		}
	}
}

func FuzzParsePeriod(f *testing.F) {
	f.Add("2026-01-01", "2026-12-31")
	f.Add("2024-02-29", "2024-02-29")
	f.Add("0000-01-01", "9999-12-31")
	f.Add("2026-13-01", "x")
	f.Fuzz(func(t *testing.T, start, end string) {
		p, err := parseValidPeriod(start, end)
		if err != nil {
			return
		}
		if p.End.Before(p.Start) || p.Days() < 1 || p.Days() > usage.MaxPeriodDays {
			t.Fatalf("accepted %q..%q as %v (%d days)", start, end, p, p.Days())
		}
		if p.Start.Format(usage.DateLayout) != start || p.End.Format(usage.DateLayout) != end {
			t.Fatalf("accepted non-canonical dates %q, %q", start, end)
		}
	})
}
