package usage

import (
	"testing"
	"time"

	"proxyusage/internal/apperr"
)

func day(s string) time.Time {
	t, err := time.Parse(DateLayout, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestPeriodValidate(t *testing.T) {
	for _, c := range []struct {
		p  Period
		ok bool
	}{
		{Period{day("2026-01-01"), day("2026-01-01")}, true},
		{Period{day("2024-02-29"), day("2025-02-28")}, true},
		{Period{day("2025-01-01"), day("2026-01-01")}, true},  // 366 days
		{Period{day("0001-01-01"), day("0001-01-01")}, true},  // time.Time's zero is a day like any other
		{Period{day("2025-01-01"), day("2026-01-02")}, false}, // 367 days
		{Period{day("2026-01-02"), day("2026-01-01")}, false},
		{Period{day("2026-01-01").Add(time.Hour), day("2026-01-02")}, false},
		{Period{day("2026-01-01"), day("2026-01-02").In(time.FixedZone("x", 3600))}, false},
	} {
		err := c.p.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%v: Validate() = %v, want ok %v", c.p, err, c.ok)
		}
		if err != nil && apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("%v: code %s, want %s", c.p, apperr.CodeOf(err), apperr.Invalid)
		}
	}
}
