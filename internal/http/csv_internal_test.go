package http

import "testing"

func TestTextCell(t *testing.T) {
	for in, want := range map[string]string{
		"=1+2":           "'=1+2",
		"+1":             "'+1",
		"-cmd":           "'-cmd",
		"@SUM(A1)":       "'@SUM(A1)",
		"\tx":            "'\tx",
		"\rx":            "'\rx",
		"proxy-1":        "proxy-1",
		"2026-01-01":     "2026-01-01",
		"":               "",
		"'quoted":        "'quoted",
		"a=b":            "a=b",
		"premium base =": "premium base =",
	} {
		if got := textCell(in); got != want {
			t.Errorf("textCell(%q) = %q, want %q", in, got, want)
		}
	}
}
