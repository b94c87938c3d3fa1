package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// root is the repository root, seen from this package's directory.
const root = ".."

func repoPath(parts ...string) string { return filepath.Join(append([]string{root}, parts...)...) }

func readFile(t testing.TB, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(repoPath(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Datasource uids provisioned in grafana/provisioning/datasources.
const (
	promUID = "prometheus"
	dbUID   = "proxyusage-db"
	dbType  = "grafana-postgresql-datasource"
)

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string `json:"refId"`
	Datasource *dsRef `json:"datasource"`
	Expr       string `json:"expr"`
	RawSQL     string `json:"rawSql"`
	Format     string `json:"format"`
	RawQuery   bool   `json:"rawQuery"`
}

type panel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource *dsRef   `json:"datasource"`
	Targets    []target `json:"targets"`
	Panels     []panel  `json:"panels"` // a collapsed row's panels
}

type dashboard struct {
	File   string
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

// all returns every panel, rows' nested panels included.
func (d dashboard) all() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// query is one panel target: PromQL or SQL.
type query struct {
	Dashboard, Panel, RefID, Format string
	Text                            string
}

func (q query) String() string { return fmt.Sprintf("%s / %q / %s", q.Dashboard, q.Panel, q.RefID) }

// loadDashboards parses every dashboard JSON under grafana/dashboards.
func loadDashboards(t testing.TB) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(repoPath("grafana", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		d.File = filepath.Base(f)
		out[strings.TrimSuffix(d.File, ".json")] = d
	}
	for _, name := range []string{"service-health", "usage"} {
		if _, ok := out[name]; !ok {
			t.Fatalf("grafana/dashboards/%s.json is missing (have %v)", name, files)
		}
	}
	return out
}

// queriesOf lists the targets of a datasource uid across the dashboards.
func queriesOf(t testing.TB, uid string) []query {
	t.Helper()
	var out []query
	for _, d := range loadDashboards(t) {
		for _, p := range d.all() {
			for _, tg := range p.Targets {
				ds := tg.Datasource
				if ds == nil {
					ds = p.Datasource
				}
				if ds == nil || ds.UID != uid {
					continue
				}
				text := tg.Expr
				if uid == dbUID {
					text = tg.RawSQL
				}
				out = append(out, query{Dashboard: d.File, Panel: p.Title, RefID: tg.RefID, Format: tg.Format, Text: text})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func promQueries(t testing.TB) []query { return queriesOf(t, promUID) }
func sqlQueries(t testing.TB) []query  { return queriesOf(t, dbUID) }

func TestDashboardsAreWellFormed(t *testing.T) {
	ds := loadDashboards(t)
	uids := map[string]string{}
	for name, d := range ds {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", d.File)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", name, other, d.UID)
		}
		uids[d.UID] = name
		ids := map[int]bool{}
		for _, p := range d.all() {
			if ids[p.ID] {
				t.Errorf("%s: duplicate panel id %d", d.File, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if p.Title == "" {
				t.Errorf("%s: panel %d has no title", d.File, p.ID)
			}
			if p.Datasource == nil || (p.Datasource.UID != promUID && p.Datasource.UID != dbUID) {
				t.Errorf("%s / %q: datasource %+v is not a provisioned one", d.File, p.Title, p.Datasource)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s / %q: no queries", d.File, p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if refs[tg.RefID] || tg.RefID == "" {
					t.Errorf("%s / %q: missing or repeated refId %q", d.File, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && *tg.Datasource != *p.Datasource {
					t.Errorf("%s / %q: target datasource %+v differs from the panel's", d.File, p.Title, tg.Datasource)
				}
				switch p.Datasource.UID {
				case promUID:
					if p.Datasource.Type != "prometheus" || strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s / %q: Prometheus target without expr", d.File, p.Title)
					}
				case dbUID:
					if p.Datasource.Type != dbType || strings.TrimSpace(tg.RawSQL) == "" || !tg.RawQuery ||
						(tg.Format != "table" && tg.Format != "time_series") {
						t.Errorf("%s / %q: SQL target needs type %s, rawSql, rawQuery and a format: %+v", d.File, p.Title, dbType, tg)
					}
				}
			}
		}
	}
	if n := len(queriesOf(t, dbUID)); n < 5 {
		t.Errorf("usage dashboard has %d SQL queries, want its business panels", n)
	}
	for _, q := range promQueries(t) {
		if q.Dashboard != "service-health.json" {
			t.Errorf("%s: the usage dashboard reads the database, not Prometheus", q)
		}
	}
}

// The provisioning files refer to the datasource uids the dashboards use,
// and the dashboard provider reads the directory compose mounts.
func TestGrafanaProvisioning(t *testing.T) {
	dsYAML := readFile(t, "grafana", "provisioning", "datasources", "datasources.yaml")
	for uid, typ := range map[string]string{promUID: "prometheus", dbUID: dbType} {
		re := regexp.MustCompile(`(?m)^\s+uid: ` + regexp.QuoteMeta(uid) + `\n\s+type: ` + regexp.QuoteMeta(typ) + `\n`)
		if !re.MatchString(dsYAML) {
			t.Errorf("datasources.yaml: no datasource with uid %s and type %s", uid, typ)
		}
	}
	for _, want := range []string{"url: http://prometheus:9090", "url: timescaledb:5432", "database: proxyusage", "user: grafana_reader"} {
		if !strings.Contains(dsYAML, want) {
			t.Errorf("datasources.yaml lacks %q", want)
		}
	}
	dbYAML := readFile(t, "grafana", "provisioning", "dashboards", "dashboards.yaml")
	if !strings.Contains(dbYAML, "path: /etc/grafana/dashboards") {
		t.Error("dashboards.yaml must load /etc/grafana/dashboards")
	}
	compose := readFile(t, "docker-compose.yml")
	for _, mount := range []string{
		"./grafana/provisioning:/etc/grafana/provisioning:ro",
		"./grafana/dashboards:/etc/grafana/dashboards:ro",
		"./deploy/postgres/grafana-reader.sql:/docker-entrypoint-initdb.d/",
	} {
		if !strings.Contains(compose, mount) {
			t.Errorf("docker-compose.yml lacks the mount %q", mount)
		}
	}
}

// metricNameRE finds metric names in PromQL (good enough for our queries:
// label values and functions never look like these).
var metricNameRE = regexp.MustCompile(`\b(?:proxyusage|go|process)_[a-z0-9_]+\b|\bup\b`)

func metricNames(expr string) []string { return metricNameRE.FindAllString(expr, -1) }

// The service-health dashboard covers every area the issue names.
func TestServiceHealthCoverage(t *testing.T) {
	used := map[string]bool{}
	for _, q := range promQueries(t) {
		for _, m := range metricNames(q.Text) {
			used[m] = true
		}
		if strings.Contains(q.Text, "proxyId") || strings.Contains(q.Text, "user_id") {
			t.Errorf("%s: dashboards must not slice by proxy or user: %s", q, q.Text)
		}
	}
	for _, m := range []string{
		"up",
		"proxyusage_http_requests_total", // request rate, errors by code
		"proxyusage_http_request_duration_seconds_bucket",  // latency quantiles
		"proxyusage_ingest_events_total",                   // ingest rate by result
		"proxyusage_ingest_request_events_bucket",          // batch sizes
		"proxyusage_ingest_flush_duration_seconds_bucket",  // flush latency
		"proxyusage_ingest_flush_events_sum",               // flush size
		"proxyusage_ingest_flushes_total",                  // flushes by result
		"proxyusage_ingest_queue_depth",                    // queue depth
		"proxyusage_ingest_shed_total",                     // load shedding
		"proxyusage_ingest_held_back_seconds_total",        // backpressure from rollup lag
		"proxyusage_http_shed_total",                       //
		"proxyusage_idempotency_key_index_bytes",           // key index against the cache
		"proxyusage_database_shared_buffers_bytes",         //
		"proxyusage_rollup_lag_seconds",                    // rollup lag
		"proxyusage_rollup_pending_invalidations",          //
		"proxyusage_rollup_runs_total",                     //
		"proxyusage_rollup_last_success_timestamp_seconds", //
		"proxyusage_rollup_leader",                         //
		"proxyusage_db_pool_acquired_conns",                // pool saturation
		"proxyusage_db_pool_max_conns",                     //
		"proxyusage_db_pool_empty_acquires_total",          //
		"process_resident_memory_bytes",                    // runtime
		"go_goroutines",                                    //
	} {
		if !used[m] {
			t.Errorf("no service-health panel uses %s", m)
		}
	}
}

var rawTableRE = regexp.MustCompile(`(?i)\b(usage_events|usage_event_keys|usage_rollup_deltas|usage_connection_invalidations|usage_connections)\b`)

func TestUsagePanelsReadRollupsOnly(t *testing.T) {
	qs := sqlQueries(t)
	for _, q := range qs {
		if q.Dashboard != "usage.json" {
			t.Errorf("%s: SQL panels belong to the usage dashboard", q)
		}
		if m := rawTableRE.FindString(q.Text); m != "" {
			t.Errorf("%s reads %s; usage panels must query the rollups", q, m)
		}
		if !regexp.MustCompile(`\busage_daily(_peak)?\b`).MatchString(q.Text) {
			t.Errorf("%s reads neither usage_daily nor usage_daily_peak", q)
		}
		if !strings.Contains(q.Text, "$__timeFilter(") && !strings.Contains(q.Text, "$__timeFrom()") {
			t.Errorf("%s ignores the dashboard time range", q)
		}
		if q.Format == "time_series" && !strings.Contains(q.Text, `AS "time"`) {
			t.Errorf("%s: a time series query needs a column named time", q)
		}
	}
	titles := map[string]bool{}
	for _, q := range qs {
		titles[q.Panel] = true
	}
	for _, want := range []string{"Bytes per day by tier", "Top proxies by bytes", "Connections and peak concurrency",
		"Error rate per day", "Totals", "Totals by tier"} {
		if !titles[want] {
			t.Errorf("usage dashboard lacks the panel %q", want)
		}
	}
}

// grafanaMacros expands the PostgreSQL datasource's macros the way Grafana
// does, for the range [from, to].
func grafanaMacros(t testing.TB, sql string, from, to time.Time) string {
	t.Helper()
	lit := func(ts time.Time) string { return "'" + ts.UTC().Format(time.RFC3339) + "'" }
	fromS, toS := strconv.FormatInt(from.Unix(), 10), strconv.FormatInt(to.Unix(), 10)
	interval := 15 * time.Second
	funcs := map[string]func(args []string) string{
		"__timeFilter":      func(a []string) string { return a[0] + " BETWEEN " + lit(from) + " AND " + lit(to) },
		"__timeFrom":        func([]string) string { return lit(from) },
		"__timeTo":          func([]string) string { return lit(to) },
		"__time":            func(a []string) string { return a[0] + ` AS "time"` },
		"__timeEpoch":       func(a []string) string { return "extract(epoch from " + a[0] + `) AS "time"` },
		"__unixEpochFilter": func(a []string) string { return a[0] + " >= " + fromS + " AND " + a[0] + " <= " + toS },
		"__unixEpochFrom":   func([]string) string { return fromS },
		"__unixEpochTo":     func([]string) string { return toS },
		"__unixEpochNanoFrom": func([]string) string {
			return strconv.FormatInt(from.UnixNano(), 10)
		},
		"__unixEpochNanoTo": func([]string) string { return strconv.FormatInt(to.UnixNano(), 10) },
		"__timeGroup": func(a []string) string {
			sec := grafanaInterval(t, a[1], interval)
			return fmt.Sprintf("floor(extract(epoch from %s)/%d)*%d", a[0], sec, sec)
		},
		"__timeGroupAlias": func(a []string) string {
			sec := grafanaInterval(t, a[1], interval)
			return fmt.Sprintf(`floor(extract(epoch from %s)/%d)*%d AS "time"`, a[0], sec, sec)
		},
	}
	var out strings.Builder
	for i := 0; i < len(sql); {
		if !strings.HasPrefix(sql[i:], "$__") {
			out.WriteByte(sql[i])
			i++
			continue
		}
		j := i + 1
		for j < len(sql) && (sql[j] == '_' || sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] >= '0' && sql[j] <= '9') {
			j++
		}
		name := sql[i+1 : j]
		switch name {
		case "__interval":
			out.WriteString(interval.String())
			i = j
			continue
		case "__interval_ms":
			out.WriteString(strconv.FormatInt(interval.Milliseconds(), 10))
			i = j
			continue
		}
		fn, ok := funcs[name]
		if !ok || j >= len(sql) || sql[j] != '(' {
			t.Fatalf("unknown Grafana macro $%s in %q", name, sql)
		}
		depth, k := 0, j
		for ; k < len(sql); k++ {
			if sql[k] == '(' {
				depth++
			} else if sql[k] == ')' {
				if depth--; depth == 0 {
					break
				}
			}
		}
		if k == len(sql) {
			t.Fatalf("unbalanced macro $%s in %q", name, sql)
		}
		out.WriteString(fn(splitArgs(sql[j+1 : k])))
		i = k + 1
	}
	return out.String()
}

// splitArgs splits macro arguments at top-level commas.
func splitArgs(s string) []string {
	var args []string
	depth, start := 0, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] == '(' {
			depth++
		} else if i < len(s) && s[i] == ')' {
			depth--
		} else if i == len(s) || s[i] == ',' && depth == 0 {
			if a := strings.TrimSpace(s[start:i]); a != "" {
				args = append(args, a)
			}
			start = i + 1
		}
	}
	return args
}

func grafanaInterval(t testing.TB, s string, auto time.Duration) int {
	t.Helper()
	s = strings.Trim(strings.TrimSpace(s), "'")
	if s == "$__interval" {
		return int(auto.Seconds())
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			t.Fatalf("bad interval %q", s)
		}
		return n * 86400
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("bad interval %q", s)
	}
	return int(d.Seconds())
}

func TestGrafanaMacros(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(48 * time.Hour)
	for in, want := range map[string]string{
		"WHERE $__timeFilter(d.bucket) AND x":                   "WHERE d.bucket BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-03T00:00:00Z' AND x",
		"day BETWEEN $__timeFrom()::date AND $__timeTo()::date": "day BETWEEN '2026-01-01T00:00:00Z'::date AND '2026-01-03T00:00:00Z'::date",
		"$__unixEpochFilter(ts)":                                "ts >= 1767225600 AND ts <= 1767398400",
		"SELECT $__timeGroupAlias(bucket, '1d'), 1":             `SELECT floor(extract(epoch from bucket)/86400)*86400 AS "time", 1`,
		"SELECT $__time(coalesce(a, b)) FROM t":                 `SELECT coalesce(a, b) AS "time" FROM t`,
		"date_bin('$__interval'::interval, x, y)":               "date_bin('15s'::interval, x, y)",
		"$__unixEpochFrom() < $__unixEpochTo()":                 "1767225600 < 1767398400",
	} {
		if got := grafanaMacros(t, in, from, to); got != want {
			t.Errorf("grafanaMacros(%q) = %q, want %q", in, got, want)
		}
	}
}
