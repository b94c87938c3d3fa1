package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/localdb"
)

// lockedBuffer collects a child's output safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// promServer is a real Prometheus started by a test.
type promServer struct {
	t    *testing.T
	base string
	out  *lockedBuffer
}

// startPrometheus runs the prometheus binary with config on a free port and
// its own storage, and kills it when the test ends.
func startPrometheus(t *testing.T, bin, config string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := localdb.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	out := &lockedBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	p := &promServer{t: t, base: "http://" + addr, out: out}
	p.waitFor("Prometheus ready", 30*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", out.String())
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

func (p *promServer) waitFor(what string, limit time.Duration, ok func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type promResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Data      json.RawMessage `json:"data"`
}

func (p *promServer) get(path string, params url.Values) promResponse {
	p.t.Helper()
	u := p.base + path
	if params != nil {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	var r promResponse
	if err := json.Unmarshal(b, &r); err != nil {
		p.t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	return r
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

type queryResult struct {
	resp    promResponse
	samples []promSample // vector results
	scalar  bool
}

// query evaluates an instant query.
func (p *promServer) query(expr string) queryResult {
	p.t.Helper()
	r := p.get("/api/v1/query", url.Values{"query": {expr}})
	res := queryResult{resp: r}
	if r.Status != "success" {
		return res
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		p.t.Fatal(err)
	}
	switch data.ResultType {
	case "vector":
		if err := json.Unmarshal(data.Result, &res.samples); err != nil {
			p.t.Fatal(err)
		}
	case "scalar":
		res.scalar = true
	default:
		p.t.Fatalf("%s: unexpected result type %s", expr, data.ResultType)
	}
	return res
}

func (s promSample) float(t *testing.T) float64 {
	t.Helper()
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		t.Fatalf("sample value %v: %v", s.Value, err)
	}
	return v
}

// grafanaPromVars replaces Grafana's built-in variables the way a panel
// would with a 15 s step on a 1 h range.
func grafanaPromVars(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "1m",
		"$__interval_ms", "15000",
		"$__interval", "15s",
		"$__range_s", "3600",
		"$__range", "1h",
	).Replace(expr)
}

// Expressions that may legitimately be empty on a young service.
var mayBeEmpty = map[string]string{
	"time() - max(proxyusage_rollup_last_success_timestamp_seconds > 0)": "empty until the first rollup run succeeds",
}

// A real Prometheus scrapes the running service with the shipped alert
// rules loaded; every dashboard expression and every rule evaluates without
// error, and the dashboards' expressions return data.
func TestPrometheusEndToEnd(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (Debian package prometheus)")
	}
	env := apptest.Start(t, database.Postgres)
	driveTraffic(t, env)
	target := strings.TrimPrefix(env.URL, "http://")
	rules, err := filepath.Abs(repoPath("deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	prom := startPrometheus(t, bin, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: proxyusage
    static_configs:
      - targets: [%q]
`, rules, target))

	prom.waitFor("the service to be scraped", 30*time.Second, func() bool {
		r := prom.query(`up{job="proxyusage"} == 1`)
		return r.resp.Status == "success" && len(r.samples) == 1
	})
	// Traffic while Prometheus watches, so rates are not zero.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; ctx.Err() == nil; i++ {
		driveTraffic(t, env)
		r := prom.query(`sum(rate(proxyusage_ingest_events_total{result="accepted"}[1m])) > 0`)
		if i >= 2 && len(r.samples) == 1 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatal("accepted-event rate never became positive")
	}

	// Dashboards.
	exprs := promQueries(t)
	if len(exprs) < 30 {
		t.Fatalf("only %d PromQL expressions found in the dashboards", len(exprs))
	}
	for _, q := range exprs {
		expr := grafanaPromVars(q.Text)
		if strings.Contains(expr, "$") {
			t.Errorf("%s: unknown Grafana variable in %s", q, expr)
			continue
		}
		r := prom.query(expr)
		if r.resp.Status != "success" {
			t.Errorf("%s: %s: %s %s", q, expr, r.resp.ErrorType, r.resp.Error)
			continue
		}
		if len(r.resp.Warnings) > 0 {
			t.Errorf("%s: warnings %v", q, r.resp.Warnings)
		}
		if _, ok := mayBeEmpty[q.Text]; !ok && !r.scalar && len(r.samples) == 0 {
			t.Errorf("%s returned no data: %s", q, expr)
		}
	}
	// The main ones carry real values.
	for expr, min := range map[string]float64{
		`sum(rate(proxyusage_http_requests_total[1m]))`:                                                     0.1,
		`sum(rate(proxyusage_ingest_events_total{result="accepted"}[1m]))`:                                  0.01,
		`sum(rate(proxyusage_http_requests_total{route="/proxy/usage/{proxyId}/record",status="201"}[1m]))`: 0.01,
		`histogram_quantile(0.99, sum by (le) (rate(proxyusage_http_request_duration_seconds_bucket[1m])))`: 1e-6,
		`sum(up{job="proxyusage"})`: 1,
	} {
		r := prom.query(expr)
		if len(r.samples) != 1 || r.samples[0].float(t) < min {
			t.Errorf("%s = %+v, want >= %v", expr, r.samples, min)
		}
	}
	for _, must := range []string{
		"sum by (route, method) (rate(proxyusage_http_requests_total[$__rate_interval]))",
		`sum(rate(proxyusage_ingest_events_total{result="accepted"}[$__rate_interval]))`,
		"sum by (result) (rate(proxyusage_ingest_events_total[$__rate_interval]))",
	} {
		found := false
		for _, q := range exprs {
			found = found || q.Text == must
		}
		if !found {
			t.Errorf("the service-health dashboard lost the query %s", must)
		}
	}
	r := prom.query(`sum by (route) (rate(proxyusage_http_requests_total[1m]))`)
	for _, s := range r.samples {
		if !routeTemplate.MatchString(s.Metric["route"]) {
			t.Errorf("route label %q in Prometheus is not a template", s.Metric["route"])
		}
	}

	// Alert rules: loaded, evaluated without error, and each expression
	// also runs as a query.
	type rule struct {
		Name           string `json:"name"`
		Query          string `json:"query"`
		Type           string `json:"type"`
		Health         string `json:"health"`
		LastError      string `json:"lastError"`
		State          string `json:"state"`
		LastEvaluation string `json:"lastEvaluation"`
	}
	var loaded []rule
	prom.waitFor("every rule to be evaluated", 20*time.Second, func() bool {
		resp := prom.get("/api/v1/rules", nil)
		var data struct {
			Groups []struct {
				Rules []rule `json:"rules"`
			} `json:"groups"`
		}
		if resp.Status != "success" || json.Unmarshal(resp.Data, &data) != nil {
			return false
		}
		loaded = loaded[:0]
		for _, g := range data.Groups {
			loaded = append(loaded, g.Rules...)
		}
		for _, r := range loaded {
			if r.Health == "unknown" || strings.HasPrefix(r.LastEvaluation, "0001-") {
				return false
			}
		}
		return len(loaded) > 0
	})
	names := alertNames(t)
	if len(loaded) != len(names) {
		t.Errorf("Prometheus loaded %d rules, alerts.yml has %d", len(loaded), len(names))
	}
	for _, r := range loaded {
		if r.Type != "alerting" || r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s: type %s health %s error %q", r.Name, r.Type, r.Health, r.LastError)
		}
		// Every rule but ProxyUsageRollupErrors waits a minute or more
		// before firing; the test traffic (a fifth of it rejected on
		// purpose) may make some pending, none firing.
		if r.State == "firing" {
			t.Errorf("rule %s fires on a healthy service", r.Name)
		}
		if q := prom.query(r.Query); q.resp.Status != "success" {
			t.Errorf("rule %s: %s: %s", r.Name, r.Query, q.resp.Error)
		}
	}
}
