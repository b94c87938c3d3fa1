package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/config"
	"proxyusage/internal/database"
	"proxyusage/internal/exact"
)

func TestCLISeedReportBill(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	var out, errOut bytes.Buffer
	cfg := config.Config{JWTSecret: apptest.Secret}
	err := seedCmd(cfg, []string{"-url", env.URL, "-users", "3", "-proxies", "6", "-days", "3", "-events", "3000", "-clients", "2"}, &out, &errOut)
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, errOut.String())
	}
	// The workload drops the events it would date after now (the ends of
	// the last connections), so a few of the 3000 may be missing.
	seeded := regexp.MustCompile(`seeded (\d+) events`).FindStringSubmatch(out.String())
	if !strings.Contains(errOut.String(), "100%") || seeded == nil {
		t.Fatalf("seed output:\n%s\n%s", out.String(), errOut.String())
	}
	if n := env.Count(`SELECT count(*) FROM usage_events`); strconv.Itoa(n) != seeded[1] || n < 2900 {
		t.Fatalf("stored %d events, seed said %s", n, seeded[1])
	}
	seedOut := out.String()

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
	// seed gives users free, premium and enterprise in turn, so the paid
	// users' bills are not zero.
	if !strings.Contains(seedOut, "user-001 premium") || !strings.Contains(seedOut, "bin/proxyusage bill -token $(bin/proxyusage token -sub user-001)") {
		t.Errorf("seed output does not name the tiers and the binary:\n%s", seedOut)
	}
	for _, paid := range []struct{ user, tier string }{{"user-001", "premium"}, {"user-002", "enterprise"}} {
		var bill bytes.Buffer
		if err := billCmd([]string{"-url", env.URL, "-token", apptest.Token(t, paid.user)}, &bill, &errOut); err != nil {
			t.Fatal(err)
		}
		total := regexp.MustCompile(`TOTAL\s+([0-9.]+) USD`).FindStringSubmatch(bill.String())
		if !strings.Contains(bill.String(), "tier "+paid.tier) || total == nil || total[1] == "0.00" {
			t.Errorf("%s's bill should be %s with a non-zero total:\n%s", paid.user, paid.tier, bill.String())
		}
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
	// Backquotes in a flag's help would become its argument name.
	var seedHelp bytes.Buffer
	_ = run([]string{"seed", "-h"}, &seedHelp, &seedHelp)
	if !strings.Contains(seedHelp.String(), "-token string") {
		t.Errorf("seed -h:\n%s", seedHelp.String())
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

// The requests `serve -print-dev-token` suggests work as printed: the
// record request sent twice is stored once, and the day's metrics show it.
func TestDevHintsWork(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	tok := apptest.Token(t, "dev-user", "admin")
	hints := devHints(env.URL, tok)
	curl := regexp.MustCompile(`(?m)^\s*curl -s (?:-X (\w+) )?(?:"([^"]+)"|(\S+)) .*?(?:-d '([^']*)')?\s*-w`)
	var got []string
	for _, m := range curl.FindAllStringSubmatch(hints, -1) {
		method, path, body := cmp.Or(m[1], "GET"), strings.TrimPrefix(m[2]+m[3], env.URL), any(nil)
		path = strings.ReplaceAll(path, "$(date -u +%F)", time.Now().UTC().Format("2006-01-02"))
		if m[4] != "" {
			body = m[4]
		}
		repeats := 1
		if method == "POST" {
			repeats = 2 // the hint says to send it twice
		}
		for range repeats {
			r := env.Do(method, path, tok, body)
			got = append(got, fmt.Sprintf("%s %d", method, r.Status))
			if method == "GET" && !strings.Contains(string(r.Body), `"bytesSent":1024`) {
				t.Errorf("GET %s: %s", path, r.Body)
			}
			if method == "POST" && r.Status == 200 && !strings.Contains(string(r.Body), `"duplicate":true`) {
				t.Errorf("repeat: %s", r.Body)
			}
		}
	}
	if want := "PUT 201, POST 201, POST 200, GET 200"; strings.Join(got, ", ") != want {
		t.Fatalf("hints answered %s, want %s\n%s", strings.Join(got, ", "), want, hints)
	}
}
