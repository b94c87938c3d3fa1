package deploy_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// traffic is what one round of driveTraffic used: none of these may show
// up in a label value.
type traffic struct {
	ids []string
}

func randomTag(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// driveTraffic exercises every kind of request the metrics distinguish:
// registration, single and batch ingest (accepted, duplicate, rejected),
// an unknown proxy (404 on a matched route), an unmatched path (404), a
// missing token (401) and the probes. Ids are unique per call.
func driveTraffic(t testing.TB, env *apptest.Env) traffic {
	t.Helper()
	tag := randomTag(t)
	user := "user-" + tag
	tok := apptest.Token(t, user)
	pa, pb := "px-"+tag+"-a", "px-"+tag+"-b"
	env.MustRegister(tok, pa)
	env.MustRegister(tok, pb)
	now := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339Nano)
	expect := func(r apptest.Response, status int, what string) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: status %d, want %d: %s", what, r.Status, status, r.Body)
		}
	}
	ev := "ev-" + tag
	conn := "conn-" + tag
	one := fmt.Sprintf(`{"eventType":"data_transfer","eventId":%q,"timestamp":%q,"eventData":{"bytesSent":1000,"bytesReceived":500,"latencyMs":12.5,"ipAddress":"10.1.2.3"}}`, ev, now)
	expect(env.Do(http.MethodPost, "/proxy/usage/"+pa+"/record", tok, one), 201, "record")
	expect(env.Do(http.MethodPost, "/proxy/usage/"+pa+"/record", tok, one), 200, "duplicate record")
	expect(env.Do(http.MethodPost, "/proxy/usage/"+pa+"/record", tok,
		fmt.Sprintf(`{"eventType":"connection_start","eventData":{"connectionId":%q}}`, conn)), 201, "start")
	expect(env.Do(http.MethodPost, "/proxy/usage/"+pa+"/record", tok,
		fmt.Sprintf(`{"eventType":"connection_end","eventData":{"connectionId":%q,"durationSeconds":2.5}}`, conn)), 201, "end")
	expect(env.Do(http.MethodPost, "/proxy/usage/"+pb+"/record", tok,
		`{"eventType":"error","eventData":{"errorMessage":"upstream refused"}}`), 201, "error event")
	batch := fmt.Sprintf(`{"events":[
		{"proxyId":%q,"eventType":"data_transfer","eventId":"b1-%s","eventData":{"bytesSent":10}},
		{"proxyId":%q,"eventType":"data_transfer","eventId":"b2-%s","eventData":{"bytesReceived":20}},
		{"proxyId":%q,"eventType":"data_transfer","eventId":"b1-%s","eventData":{"bytesSent":10}},
		{"proxyId":%q,"eventType":"connection_start","eventData":{"connectionId":%q}}]}`,
		pa, tag, pb, tag, pa, tag, pb, conn)
	expect(env.Do(http.MethodPost, "/proxy/usage/events", tok, batch), 201, "batch")
	expect(env.Do(http.MethodPost, "/proxy/usage/"+pa+"/record", tok, `{"eventType":"bogus"}`), 400, "invalid event")
	expect(env.Do(http.MethodPost, "/proxy/usage/nope-"+tag+"/record", tok, `{"eventType":"error"}`), 404, "unknown proxy")
	expect(env.Do(http.MethodGet, "/no/such/"+pa, tok, nil), 404, "unmatched path")
	expect(env.Do(http.MethodGet, "/proxies", "", nil), 401, "no token")
	expect(env.Do(http.MethodGet, "/proxies", tok, nil), 200, "list")
	expect(env.Do(http.MethodGet, "/healthz", "", nil), 200, "healthz")
	expect(env.Do(http.MethodGet, "/readyz", "", nil), 200, "readyz")
	return traffic{ids: []string{tag, user, pa, pb, ev, conn}}
}

// scrape fetches and parses /metrics.
func scrape(t testing.TB, env *apptest.Env) map[string]*dto.MetricFamily {
	t.Helper()
	r := env.Do(http.MethodGet, "/metrics", "", nil)
	if r.Status != 200 {
		t.Fatalf("/metrics: %d", r.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(r.Body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// sample finds the value of the series of fam with exactly these labels.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := labelsOf(m)
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// documented lists every metric the service documents, with its type and
// label names (README, "Metrics, dashboards and alerts"; internal/telemetry).
var documented = map[string]struct {
	typ    dto.MetricType
	labels []string
}{
	"proxyusage_http_requests_total":                   {dto.MetricType_COUNTER, []string{"method", "route", "status"}},
	"proxyusage_http_request_duration_seconds":         {dto.MetricType_HISTOGRAM, []string{"method", "route"}},
	"proxyusage_http_shed_total":                       {dto.MetricType_COUNTER, nil},
	"proxyusage_http_inflight_requests":                {dto.MetricType_GAUGE, nil},
	"proxyusage_http_open_connections":                 {dto.MetricType_GAUGE, nil},
	"proxyusage_readiness_checks_total":                {dto.MetricType_COUNTER, nil},
	"proxyusage_ingest_events_total":                   {dto.MetricType_COUNTER, []string{"result"}},
	"proxyusage_ingest_request_events":                 {dto.MetricType_HISTOGRAM, nil},
	"proxyusage_ingest_flushes_total":                  {dto.MetricType_COUNTER, []string{"result"}},
	"proxyusage_ingest_flush_duration_seconds":         {dto.MetricType_HISTOGRAM, nil},
	"proxyusage_ingest_flush_events":                   {dto.MetricType_HISTOGRAM, nil},
	"proxyusage_ingest_queue_depth":                    {dto.MetricType_GAUGE, nil},
	"proxyusage_ingest_shed_total":                     {dto.MetricType_COUNTER, nil},
	"proxyusage_ingest_held_back_seconds_total":        {dto.MetricType_COUNTER, nil},
	"proxyusage_idempotency_key_index_bytes":           {dto.MetricType_GAUGE, nil},
	"proxyusage_database_shared_buffers_bytes":         {dto.MetricType_GAUGE, nil},
	"proxyusage_rollup_runs_total":                     {dto.MetricType_COUNTER, []string{"result"}},
	"proxyusage_rollup_lag_seconds":                    {dto.MetricType_GAUGE, nil},
	"proxyusage_rollup_pending_invalidations":          {dto.MetricType_GAUGE, nil},
	"proxyusage_rollup_last_success_timestamp_seconds": {dto.MetricType_GAUGE, nil},
	"proxyusage_rollup_days_refreshed_total":           {dto.MetricType_COUNTER, nil},
	"proxyusage_rollup_leader":                         {dto.MetricType_GAUGE, nil},
	"proxyusage_alerts_recorded_total":                 {dto.MetricType_COUNTER, nil},
	"proxyusage_alerts_abandoned_total":                {dto.MetricType_COUNTER, nil},
	"proxyusage_webhook_deliveries_total":              {dto.MetricType_COUNTER, []string{"result"}},
	"proxyusage_alert_delivery_seconds":                {dto.MetricType_HISTOGRAM, nil},
	"proxyusage_alerts_leader":                         {dto.MetricType_GAUGE, nil},
	"proxyusage_read_snapshots_total":                  {dto.MetricType_COUNTER, []string{"server"}},
	"proxyusage_read_fence_wait_seconds":               {dto.MetricType_HISTOGRAM, nil},
	"proxyusage_read_fallbacks_total":                  {dto.MetricType_COUNTER, []string{"reason"}},
	"proxyusage_db_pool_acquired_conns":                {dto.MetricType_GAUGE, []string{"pool"}},
	"proxyusage_db_pool_idle_conns":                    {dto.MetricType_GAUGE, []string{"pool"}},
	"proxyusage_db_pool_total_conns":                   {dto.MetricType_GAUGE, []string{"pool"}},
	"proxyusage_db_pool_max_conns":                     {dto.MetricType_GAUGE, []string{"pool"}},
	"proxyusage_db_pool_constructing_conns":            {dto.MetricType_GAUGE, []string{"pool"}},
	"proxyusage_db_pool_acquires_total":                {dto.MetricType_COUNTER, []string{"pool"}},
	"proxyusage_db_pool_empty_acquires_total":          {dto.MetricType_COUNTER, []string{"pool"}},
	"proxyusage_db_pool_canceled_acquires_total":       {dto.MetricType_COUNTER, []string{"pool"}},
	"proxyusage_db_pool_acquire_seconds_total":         {dto.MetricType_COUNTER, []string{"pool"}},
	"go_goroutines":                                    {dto.MetricType_GAUGE, nil},
	"go_threads":                                       {dto.MetricType_GAUGE, nil},
	"go_memstats_heap_inuse_bytes":                     {dto.MetricType_GAUGE, nil},
	"go_gc_duration_seconds":                           {dto.MetricType_SUMMARY, nil},
	"process_resident_memory_bytes":                    {dto.MetricType_GAUGE, nil},
	"process_cpu_seconds_total":                        {dto.MetricType_COUNTER, nil},
	"process_open_fds":                                 {dto.MetricType_GAUGE, nil},
}

// routeTemplate is a mux path template (or "unmatched"): literal segments
// and {variables}, never a concrete id.
var routeTemplate = regexp.MustCompile(`^(unmatched|(/([a-z]+|\{[a-zA-Z]+\}))+)$`)

// Label values that are allowed for every bounded label.
var boundedLabel = map[string]*regexp.Regexp{
	"route":  routeTemplate,
	"method": regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$`),
	"status": regexp.MustCompile(`^[1-5][0-9][0-9]$`),
	"result": regexp.MustCompile(`^(accepted|duplicate|rejected|ok|error|delivered|http_error|timeout|network_error|refused)$`),
	"pool":   regexp.MustCompile(`^(main|ingest|standby)$`),
	"le":     regexp.MustCompile(`^([0-9.e+-]+|\+Inf)$`),
	"server": regexp.MustCompile(`^(standby|primary)$`),
	"reason": regexp.MustCompile(`^(timeout|conflict|unavailable|fence)$`),
}

func seriesCount(fams map[string]*dto.MetricFamily) (int, []string) {
	n := 0
	var keys []string
	for name, f := range fams {
		if !strings.HasPrefix(name, "proxyusage_") {
			continue
		}
		for _, m := range f.GetMetric() {
			n++
			keys = append(keys, name+fmt.Sprint(labelsOf(m)))
		}
	}
	sort.Strings(keys)
	return n, keys
}

func TestMetricsExposition(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	first := driveTraffic(t, env)
	fams := scrape(t, env)

	for name, want := range documented {
		f := fams[name]
		if f == nil {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if f.GetType() != want.typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), want.typ)
		}
		if !strings.HasPrefix(name, "proxyusage_") {
			continue
		}
		if len(f.GetMetric()) == 0 {
			t.Errorf("%s has no series", name)
		}
		if !strings.Contains(f.GetHelp(), " ") {
			t.Errorf("%s has no help text", name)
		}
		for _, m := range f.GetMetric() {
			var names []string
			for k := range labelsOf(m) {
				names = append(names, k)
			}
			sort.Strings(names)
			if strings.Join(names, ",") != strings.Join(want.labels, ",") {
				t.Errorf("%s has labels %v, want %v", name, names, want.labels)
			}
		}
	}
	for name := range fams {
		if _, ok := documented[name]; !ok && strings.HasPrefix(name, "proxyusage_") {
			// New metrics are welcome; the label checks below still apply.
			t.Logf("%s is not in this test's list", name)
		}
	}

	// Bounded label sets: only known label names, values from small sets,
	// never an id the traffic used.
	for name, f := range fams {
		if !strings.HasPrefix(name, "proxyusage_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for k, v := range labelsOf(m) {
				re, ok := boundedLabel[k]
				if !ok {
					t.Errorf("%s: unexpected label %s=%q", name, k, v)
					continue
				}
				if !re.MatchString(v) {
					t.Errorf("%s: label %s=%q is not from its bounded set", name, k, v)
				}
				for _, id := range first.ids {
					if strings.Contains(v, id) {
						t.Errorf("%s: label %s=%q carries the id %q", name, k, v, id)
					}
				}
			}
		}
	}

	// The traffic is counted under route templates.
	for _, c := range []struct {
		route, method, status string
		min                   float64
	}{
		{"/proxy/usage/{proxyId}/record", "POST", "201", 4},
		{"/proxy/usage/{proxyId}/record", "POST", "200", 1},
		{"/proxy/usage/{proxyId}/record", "POST", "400", 1},
		{"/proxy/usage/{proxyId}/record", "POST", "404", 1},
		{"/proxy/usage/events", "POST", "201", 1},
		{"/proxies/{proxyId}", "PUT", "201", 2},
		{"/proxies", "GET", "401", 1},
		{"/proxies", "GET", "200", 1},
		{"unmatched", "GET", "404", 1},
		{"/healthz", "GET", "200", 1},
		{"/readyz", "GET", "200", 1},
	} {
		v, ok := sample(fams, "proxyusage_http_requests_total", map[string]string{"route": c.route, "method": c.method, "status": c.status})
		if !ok || v < c.min {
			t.Errorf("proxyusage_http_requests_total{route=%q,method=%q,status=%q} = %v (present %v), want >= %v", c.route, c.method, c.status, v, ok, c.min)
		}
	}
	if v, ok := sample(fams, "proxyusage_http_request_duration_seconds", map[string]string{"route": "/proxy/usage/{proxyId}/record", "method": "POST"}); !ok || v < 7 {
		t.Errorf("latency histogram of the record route has %v observations", v)
	}
	for result, min := range map[string]float64{"accepted": 7, "duplicate": 2, "rejected": 2} {
		if v, _ := sample(fams, "proxyusage_ingest_events_total", map[string]string{"result": result}); v < min {
			t.Errorf("proxyusage_ingest_events_total{result=%q} = %v, want >= %v", result, v, min)
		}
	}
	if v, _ := sample(fams, "proxyusage_ingest_request_events", nil); v < 5 {
		t.Errorf("ingest batch-size histogram has %v observations, want one per ingest request", v)
	}
	if v, _ := sample(fams, "proxyusage_ingest_flushes_total", map[string]string{"result": "ok"}); v < 1 {
		t.Errorf("no group-commit flush counted")
	}
	if v, _ := sample(fams, "proxyusage_ingest_flush_duration_seconds", nil); v < 1 {
		t.Errorf("no flush latency observed")
	}
	for _, pool := range []string{"main", "ingest"} {
		if v, ok := sample(fams, "proxyusage_db_pool_max_conns", map[string]string{"pool": pool}); !ok || v < 1 {
			t.Errorf("pool %s: max_conns = %v (present %v)", pool, v, ok)
		}
	}
	if n := len(fams["proxyusage_db_pool_max_conns"].GetMetric()); n != 2 {
		t.Errorf("%d pools exported, want main and ingest", n)
	}

	// The series count does not grow with users and proxies: a second round
	// of the same requests with new ids adds no series.
	// (Scrape once more first: the first scrape adds the /metrics series.)
	before, keysBefore := seriesCount(scrape(t, env))
	second := driveTraffic(t, env)
	after, keysAfter := seriesCount(scrape(t, env))
	if before != after {
		t.Errorf("series grew from %d to %d with new users and proxies:\nbefore %v\nafter  %v", before, after, keysBefore, keysAfter)
	}
	for _, k := range keysAfter {
		for _, id := range second.ids {
			if strings.Contains(k, id) {
				t.Errorf("series %s carries the id %q", k, id)
			}
		}
	}
}

// seriesNames lists every series name a scrape offers PromQL: histograms
// and summaries expand to _bucket/_sum/_count.
func seriesNames(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{"up": true}
	for name, f := range fams {
		out[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	return out
}

// Every metric a dashboard panel or an alert rule reads is one the service
// exports: no panel shows "No data" for a misspelt name.
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	driveTraffic(t, env)
	have := seriesNames(scrape(t, env))
	used := map[string][]string{}
	for _, q := range promQueries(t) {
		for _, m := range metricNames(q.Text) {
			used[m] = append(used[m], q.String())
		}
	}
	for _, m := range metricNames(readFile(t, "deploy", "prometheus", "alerts.yml")) {
		used[m] = append(used[m], "alerts.yml")
	}
	if len(used) < 20 {
		t.Fatalf("found only %d metric names in the dashboards and rules", len(used))
	}
	for m, where := range used {
		if !have[m] {
			t.Errorf("%s is used by %v but the service does not export it", m, where)
		}
	}
}
