package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"testing"

	"proxyusage/internal/apptest"
	"proxyusage/internal/config"
	"proxyusage/internal/database"
	"proxyusage/internal/exact"
)

func TestCLISeedReportBill(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	var out, errOut bytes.Buffer
	cfg := config.Config{JWTSecret: apptest.Secret}
	err := seedCmd(cfg, []string{"-url", env.URL, "-users", "2", "-proxies", "4", "-days", "3", "-events", "3000", "-clients", "2"}, &out, &errOut)
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), "100%") || !strings.Contains(out.String(), "seeded 3000 events") {
		t.Fatalf("seed output:\n%s\n%s", out.String(), errOut.String())
	}
	if n := env.Count(`SELECT count(*) FROM usage_events`); n != 3000 {
		t.Fatalf("stored %d events", n)
	}

	tok := apptest.Token(t, "user-000")
	out.Reset()
	if err := reportCmd([]string{"-url", env.URL, "-token", tok, "-group-by", "proxy"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.Contains(lines[0], "user-000") || !strings.Contains(out.String(), "px-0000") || !strings.HasPrefix(strings.TrimSpace(lines[len(lines)-1]), "total") {
		t.Fatalf("report:\n%s", out.String())
	}

	out.Reset()
	if err := billCmd([]string{"-url", env.URL, "-token", tok}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "TOTAL") || !strings.Contains(out.String(), "0.00 USD") {
		t.Fatalf("bill:\n%s", out.String())
	}
	out.Reset()
	if err := limitsCmd([]string{"-url", env.URL, "-token", tok}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "used") || !strings.Contains(out.String(), "limit  none") {
		t.Fatalf("limits:\n%s", out.String())
	}
	// Errors from the API are shown with their code.
	err = reportCmd([]string{"-url", env.URL, "-token", tok, "-start", "2026-02-30"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "PROXY_USAGE_001") {
		t.Fatalf("bad date: %v", err)
	}
	if err := reportCmd([]string{"-url", env.URL}, &out, &errOut); err == nil {
		t.Fatal("report without a token")
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, cmd := range []string{"serve", "migrate", "token", "report", "bill", "limits", "seed"} {
		var out, errOut bytes.Buffer
		err := run([]string{cmd, "-help"}, &out, &errOut)
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "-") {
			t.Errorf("%s -help: %v\n%s", cmd, err, errOut.String())
		}
	}
	var out bytes.Buffer
	if err := run([]string{"--help"}, &out, &out); err != nil || !strings.Contains(out.String(), "report") {
		t.Fatalf("top-level help: %v\n%s", err, out.String())
	}
}

// The report table reads byte totals of any size: past 2^63 they are still
// JSON integers, and the table shows them in decimal units.
func TestReportTableBytesPast2To63(t *testing.T) {
	var row metricsRow
	if err := json.Unmarshal([]byte(`{"totalBytes":10133099161583616000}`), &row); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]string{"0": "0 B", "999": "999 B", "1500": "1.50 kB", "1000000000": "1.00 GB",
		"10133099161583616000": "10.13 EB", "123456789012345678901234567": "123.46 YB"} {
		v, err := exact.Parse(n)
		if err != nil {
			t.Fatal(err)
		}
		if got := humanBytes(v); got != want {
			t.Errorf("humanBytes(%s) = %q, want %q", n, got, want)
		}
	}
	if humanBytes(row.TotalBytes) != "10.13 EB" {
		t.Errorf("decoded %s", row.TotalBytes)
	}
}
