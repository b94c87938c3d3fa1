package http_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/usage"
)

// metricFields are the JSON names of usage.Metrics in declaration order:
// the CSV columns after the first.
func metricFields() []string {
	var out []string
	t := reflect.TypeFor[usage.Metrics]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out = append(out, name)
	}
	return out
}

// getWith sends a GET with extra headers.
func getWith(t *testing.T, env *apptest.Env, path, token string, header map[string]string) apptest.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, env.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return env.Send(req)
}

// parseCSV checks a CSV download's headers and parses its body.
func parseCSV(t *testing.T, r apptest.Response, filePrefix string) [][]string {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	cd := r.Header.Get("Content-Disposition")
	if !strings.HasPrefix(cd, `attachment; filename="`+filePrefix) || !strings.HasSuffix(cd, `.csv"`) {
		t.Fatalf("Content-Disposition = %q, want an attachment named %s...csv", cd, filePrefix)
	}
	if !slices.Contains(r.Header.Values("Vary"), "Accept") {
		t.Errorf("Vary = %q, want Accept", r.Header.Values("Vary"))
	}
	if !bytes.HasSuffix(r.Body, []byte("\r\n")) || bytes.Count(r.Body, []byte("\n")) != bytes.Count(r.Body, []byte("\r\n")) {
		t.Errorf("lines do not end in CRLF: %q", r.Body)
	}
	records, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
	if err != nil {
		t.Fatalf("not CSV: %v\n%s", err, r.Body)
	}
	if len(records) == 0 {
		t.Fatal("empty CSV")
	}
	return records
}

// jsonCell is the CSV spelling of a JSON value: the number as written,
// the string unquoted, null empty.
func jsonCell(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	s := string(raw)
	switch {
	case raw == nil:
		t.Fatal("missing JSON field")
	case s == "null":
		return ""
	case strings.HasPrefix(s, `"`):
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	return s
}

// sameRow compares a CSV row with a JSON object, column by column.
func sameRow(t *testing.T, what string, header, row []string, obj map[string]json.RawMessage) {
	t.Helper()
	for i, col := range header {
		if want := jsonCell(t, obj[col]); row[i] != want {
			t.Errorf("%s: %s = %q, JSON has %q", what, col, row[i], want)
		}
	}
}

type rawObj = map[string]json.RawMessage

func decodeRaw(t *testing.T, r apptest.Response, v any) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("JSON request: %d %s", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("JSON request answered %q", ct)
	}
	r.Decode(t, v)
}

// csvVariants are the ways to ask for CSV: the Accept header (plain and
// with qualities) and format=csv (which wins over Accept).
var csvVariants = []struct {
	name   string
	query  string
	header map[string]string
}{
	{"accept", "", map[string]string{"Accept": "text/csv"}},
	{"accept-q", "", map[string]string{"Accept": "application/json;q=0.5, text/csv;q=0.8, */*;q=0.1"}},
	{"format", "&format=csv", nil},
	{"format-over-accept", "&format=csv", map[string]string{"Accept": "application/json"}},
}

func TestCSVExport(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		admin := apptest.Token(t, "root", "admin")
		alice := apptest.Token(t, "alice")
		carol := apptest.Token(t, "carol")
		env.MustRegister(alice, "a1")
		env.MustRegister(alice, "a:2") // ':' is valid in ids, not in file names
		env.MustRegister(carol, "c1")

		now := time.Now().UTC()
		today := now.Truncate(24 * time.Hour)
		day := func(d int) string { return today.AddDate(0, 0, d).Format("2006-01-02") }
		// Days with connections, latencies (odd fractions), errors and
		// plain transfers; other days stay empty (zeros and nulls). Every
		// event lies in the past, whatever the time of day.
		var events []map[string]any
		for i := range 60 {
			p := []string{"a1", "a:2"}[i%2]
			ts := now.AddDate(0, 0, -(i % 5)).Add(-time.Duration(i) * 7 * time.Minute)
			conn := fmt.Sprintf("c%d", i)
			events = append(events,
				map[string]any{"proxyId": p, "eventType": "connection_start", "timestamp": ts.Format(time.RFC3339Nano),
					"eventData": map[string]any{"connectionId": conn, "latencyMs": float64(i)/3 + 0.1}},
				map[string]any{"proxyId": p, "eventType": "connection_end", "timestamp": ts.Add(90 * time.Second).Format(time.RFC3339Nano),
					"eventData": map[string]any{"connectionId": conn, "durationSeconds": 90.125, "bytesSent": 123_456_789 * (i + 1), "bytesReceived": 7 * i}})
			if i%7 == 0 {
				events = append(events, map[string]any{"proxyId": p, "eventType": "error", "timestamp": ts.Format(time.RFC3339Nano),
					"eventData": map[string]any{"errorMessage": "refused, \"quoted\"\nnew line"}})
			}
		}
		events = append(events, map[string]any{"proxyId": "c1", "eventType": "data_transfer", "eventData": map[string]any{"bytesSent": 5}})
		if r := env.Do("POST", "/proxy/usage/events", admin, map[string]any{"events": events}); r.Status != 201 {
			t.Fatalf("ingest: %d %s", r.Status, r.Body)
		}
		for user, body := range map[string]any{
			"alice": map[string]any{"tier": "premium", "effectiveFrom": day(-3)},
			"carol": map[string]any{"tier": "enterprise", "effectiveFrom": day(-1)},
		} {
			if r := env.Do("PUT", "/admin/users/"+user, admin, body); r.Status != 200 {
				t.Fatalf("set tier: %d %s", r.Status, r.Body)
			}
		}
		metricsHeader := append([]string{"date"}, metricFields()...)

		t.Run("range", func(t *testing.T) {
			for _, proxyID := range []string{"a1", "a:2"} {
				q := "?startDate=" + day(-9) + "&endDate=" + day(0)
				var want struct {
					Metrics []rawObj
					Count   int
				}
				decodeRaw(t, env.Do("GET", "/proxy/usage/"+proxyID+"/metrics"+q, alice, nil), &want)
				for _, v := range csvVariants {
					rows := parseCSV(t, getWith(t, env, "/proxy/usage/"+proxyID+"/metrics"+q+v.query, alice, v.header),
						"metrics-"+strings.ReplaceAll(proxyID, ":", "_")+"-"+day(-9)+"-"+day(0))
					if !slices.Equal(rows[0], metricsHeader) {
						t.Fatalf("%s: header = %v, want %v", v.name, rows[0], metricsHeader)
					}
					if len(rows)-1 != want.Count || want.Count != 10 {
						t.Fatalf("%s: %d rows, JSON count %d", v.name, len(rows)-1, want.Count)
					}
					for i, row := range rows[1:] {
						sameRow(t, fmt.Sprintf("%s %s day %d", v.name, proxyID, i), metricsHeader, row, want.Metrics[i])
					}
				}
			}
			// A full year streams fine.
			q := "?startDate=" + day(-365) + "&endDate=" + day(0) + "&format=csv"
			if rows := parseCSV(t, getWith(t, env, "/proxy/usage/a1/metrics"+q, alice, nil), "metrics-a1-"); len(rows) != 367 {
				t.Fatalf("a year: %d rows, want header + 366", len(rows))
			}
		})

		t.Run("report", func(t *testing.T) {
			for _, c := range []struct{ groupBy, key, query, token string }{
				{"day", "date", "", alice},
				{"day", "date", "&groupBy=day", alice},
				{"proxy", "proxyId", "&groupBy=proxy", alice},
				{"proxy", "proxyId", "&groupBy=proxy&userId=alice", admin},
			} {
				q := "?startDate=" + day(-6) + "&endDate=" + day(0) + c.query
				var want struct {
					Rows   []rawObj
					Totals rawObj
				}
				decodeRaw(t, env.Do("GET", "/proxy/usage/report"+q, c.token, nil), &want)
				header := append([]string{c.key}, metricFields()...)
				for _, v := range csvVariants {
					rows := parseCSV(t, getWith(t, env, "/proxy/usage/report"+q+v.query, c.token, v.header), "report-"+c.groupBy+"-"+day(-6)+"-"+day(0))
					what := v.name + " " + c.query
					if !slices.Equal(rows[0], header) {
						t.Fatalf("%s: header = %v, want %v", what, rows[0], header)
					}
					body := rows[1 : len(rows)-1]
					if len(body) != len(want.Rows) || len(body) == 0 {
						t.Fatalf("%s: %d rows, JSON has %d", what, len(body), len(want.Rows))
					}
					for i, row := range body {
						sameRow(t, fmt.Sprintf("%s row %d", what, i), header, row, want.Rows[i])
					}
					total := rows[len(rows)-1]
					if total[0] != "total" {
						t.Fatalf("%s: last row starts with %q, want total", what, total[0])
					}
					sameRow(t, what+" total", header[1:], total[1:], want.Totals)
				}
			}
		})

		t.Run("billing", func(t *testing.T) {
			header := []string{"description", "quantity", "unit", "unitPrice", "amount", "currency"}
			for _, c := range []struct {
				name, query, token string
				custom             bool
			}{
				{"premium", "", alice, false},
				{"admin for alice", "&userId=alice", admin, false},
				{"custom pricing", "", carol, true},
			} {
				q := "?periodStart=" + day(-40) + "&periodEnd=" + day(0) + c.query
				var want struct {
					Currency      string
					CustomPricing bool
					LineItems     []rawObj
					Total         *string
				}
				decodeRaw(t, env.Do("GET", "/proxy/usage/billing"+q, c.token, nil), &want)
				if want.CustomPricing != c.custom || (want.Total == nil) != c.custom || (!c.custom && len(want.LineItems) < 2) {
					t.Fatalf("%s: unexpected bill: custom %v total %v items %d", c.name, want.CustomPricing, want.Total, len(want.LineItems))
				}
				for _, v := range csvVariants {
					what := c.name + " " + v.name
					rows := parseCSV(t, getWith(t, env, "/proxy/usage/billing"+q+v.query, c.token, v.header), "bill-"+day(-40)+"-"+day(0))
					if !slices.Equal(rows[0], header) {
						t.Fatalf("%s: header = %v", what, rows[0])
					}
					items := rows[1 : len(rows)-1]
					if len(items) != len(want.LineItems) {
						t.Fatalf("%s: %d items, JSON has %d", what, len(items), len(want.LineItems))
					}
					for i, row := range items {
						sameRow(t, fmt.Sprintf("%s item %d", what, i), header[:5], row[:5], want.LineItems[i])
						if row[5] != want.Currency {
							t.Errorf("%s item %d: currency %q, want %q", what, i, row[5], want.Currency)
						}
					}
					total := ""
					if want.Total != nil {
						total = *want.Total
					}
					if last := rows[len(rows)-1]; !slices.Equal(last, []string{"total", "", "", "", total, want.Currency}) {
						t.Errorf("%s: total row = %q, want total %q %s", what, last, total, want.Currency)
					}
				}
			}
		})

		t.Run("negotiation", func(t *testing.T) {
			q := "/proxy/usage/report?startDate=" + day(-1) + "&endDate=" + day(0)
			for _, c := range []struct {
				accept, query string
				csv           bool
			}{
				{"", "", false},
				{"application/json", "", false},
				{"*/*", "", false},
				{"text/csv", "", true},
				{"text/csv; charset=utf-8", "", true},
				{"text/*", "", true},
				{"text/csv, application/json", "", false}, // a tie is JSON
				{"text/csv;q=0.5, application/json", "", false},
				{"text/csv, application/json;q=0.9", "", true},
				{"application/json;q=0, */*", "", true},
				{"text/csv;q=0", "", false},
				{"text/html, application/xhtml+xml", "", false},
				{"text/csv;q=bogus, application/json;q=0.1", "", false},
				{"text/csv", "&format=json", false},
				{"", "&format=csv", true},
				{"application/json", "&format=csv", true},
			} {
				r := getWith(t, env, q+c.query, alice, map[string]string{"Accept": c.accept})
				got := strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv")
				if r.Status != 200 || got != c.csv {
					t.Errorf("Accept %q%s: %d %s, want csv=%v", c.accept, c.query, r.Status, r.Header.Get("Content-Type"), c.csv)
				}
				if !got {
					var report map[string]any
					r.Decode(t, &report)
				}
			}
		})

		t.Run("errors stay JSON", func(t *testing.T) {
			csvHeader := map[string]string{"Accept": "text/csv"}
			period := "?startDate=" + day(-1) + "&endDate=" + day(0)
			bill := "?periodStart=" + day(-1) + "&periodEnd=" + day(0)
			for _, c := range []struct {
				path   string
				token  string
				status int
				code   string
			}{
				{"/proxy/usage/report" + period + "&format=xml", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/report" + period + "&format=CSV", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/report" + period + "&format=", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/a1/metrics" + period + "&format=xlsx", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/billing" + bill + "&format=pdf", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/report?startDate=yesterday&endDate=" + day(0) + "&format=csv", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/a1/metrics?startDate=" + day(0) + "&format=csv", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/billing?periodStart=" + day(0) + "&periodEnd=" + day(-1) + "&format=csv", alice, 400, "PROXY_USAGE_001"},
				{"/proxy/usage/report" + period + "&userId=carol&format=csv", alice, 403, "PROXY_USAGE_005"},
				{"/proxy/usage/billing" + bill + "&userId=carol&format=csv", alice, 403, "PROXY_USAGE_005"},
				{"/proxy/usage/c1/metrics" + period + "&format=csv", alice, 404, "PROXY_USAGE_006"},
				{"/proxy/usage/report" + period + "&format=csv", "not-a-token", 401, "PROXY_USAGE_004"},
			} {
				for _, h := range []map[string]string{csvHeader, nil} {
					r := getWith(t, env, c.path, c.token, h)
					if ct := r.Header.Get("Content-Type"); ct != "application/json" {
						t.Errorf("%s (Accept %v): error answered as %q: %s", c.path, h, ct, r.Body)
						continue
					}
					r.ExpectError(t, c.status, c.code)
				}
			}
		})
	})
}
