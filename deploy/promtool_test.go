package deploy_test

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian package prometheus)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, bin, args...)
	c.Dir = repoPath("deploy", "prometheus")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool %s did not report SUCCESS:\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

func TestPromtoolCheckConfig(t *testing.T) {
	out := promtool(t, "check", "config", "prometheus.yml")
	if !strings.Contains(out, "1 rule files found") {
		t.Errorf("prometheus.yml must load alerts.yml:\n%s", out)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	out := promtool(t, "check", "rules", "alerts.yml")
	n := len(alertNames(t))
	if !strings.Contains(out, " "+strconv.Itoa(n)+" rules found") {
		t.Errorf("promtool found a different number of rules than the %d alerts in alerts.yml:\n%s", n, out)
	}
}

// alerts_test.yml fires (and holds back) every alert on synthetic series.
func TestPromtoolTestRules(t *testing.T) {
	promtool(t, "test", "rules", "alerts_test.yml")
}

// alertNames lists the alerts of alerts.yml in file order.
func alertNames(t testing.TB) []string {
	t.Helper()
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)\s*$`).FindAllStringSubmatch(readFile(t, "deploy", "prometheus", "alerts.yml"), -1) {
		names = append(names, m[1])
	}
	return names
}

// The rules cover what the issue asks for, each carries a severity and a
// summary, and each has a unit test.
func TestAlertRulesCoverage(t *testing.T) {
	rules := readFile(t, "deploy", "prometheus", "alerts.yml")
	tests := readFile(t, "deploy", "prometheus", "alerts_test.yml")
	names := alertNames(t)
	have := map[string]bool{}
	for _, n := range names {
		if have[n] {
			t.Errorf("alert %s is defined twice", n)
		}
		have[n] = true
		if !strings.Contains(tests, "alertname: "+n+"\n") {
			t.Errorf("alert %s has no case in alerts_test.yml", n)
		}
	}
	for _, want := range []string{
		"ProxyUsageDown",                  // service down
		"ProxyUsageHigh5xxRatio",          // high 5xx ratio
		"ProxyUsageHighLatencyP99",        // p99 latency
		"ProxyUsageRollupLag",             // rollup lag
		"ProxyUsageIngestRejectionsSpike", // ingest rejections spike
		"ProxyUsageDBPoolExhausted",       // DB pool exhausted
	} {
		if !have[want] {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
	if n := strings.Count(rules, "\n          severity: "); n != len(names) {
		t.Errorf("%d alerts but %d severity labels", len(names), n)
	}
	if n := strings.Count(rules, "\n          summary: "); n != len(names) {
		t.Errorf("%d alerts but %d summaries", len(names), n)
	}
	if regexp.MustCompile(`proxy_?[iI]d|user_?[iI]d`).MatchString(rules) {
		t.Error("alert rules must not refer to proxy or user ids")
	}
}
