package http_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// Regression tests for hostile input: the strict JSON rules on every body,
// RFC 3339 offsets, CSV formula injection, GET /proxies pagination,
// contract bounds and the rejected-events counter.

// fingerprint digests every row of the tables a request could write, so a
// refused request is seen to have stored nothing, updates included.
func fingerprint(t *testing.T, env *apptest.Env) string {
	t.Helper()
	var sb strings.Builder
	for _, table := range []string{"users", "user_tiers", "user_contracts", "proxies", "usage_events", "usage_event_keys", "proxy_usage_aggregation"} {
		var digest string
		q := `SELECT coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM ` + table + ` x`
		if err := env.DB.QueryRow(context.Background(), q).Scan(&digest); err != nil {
			t.Fatalf("fingerprint %s: %v", table, err)
		}
		fmt.Fprintf(&sb, "%s=%s ", table, digest)
	}
	return sb.String()
}

// send posts body with a content type (CloudEvents need their own).
func send(env *apptest.Env, method, path, token, contentType, body string) apptest.Response {
	req := env.Request(method, path, token, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return env.Send(req)
}

// bodyEndpoint is an endpoint that takes a JSON body, with bodies that
// break the strict rules in ways that matter for its shape. body holds %s
// where a JSON string of free text goes; text is the valid one.
type bodyEndpoint struct {
	name, method, path, contentType string
	token                           string
	body, text                      string
	want                            int // status of the valid body
	// Bodies encoding/json would have read as something else.
	caseVariant, duplicate, unknown string
	extra                           map[string]string
}

func TestStrictJSONBodies(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		admin := apptest.Token(t, "root", "admin")
		env.MustRegister(alice, "p1")
		env.Do("GET", "/admin/users/alice", admin, nil) // creates root's user row
		ce := func(extra string) string {
			return `{"specversion":"1.0","id":"ce-1","source":"test","type":"proxy.usage.error","subject":"p1"` + extra + `}`
		}
		period := `"periodStart":"2026-01-01","periodEnd":"2026-01-02"`
		endpoints := []bodyEndpoint{
			{
				name: "register proxy", method: "PUT", path: "/proxies/p1", token: alice,
				body: `{"name":%s}`, text: `"ok"`, want: 200,
				caseVariant: `{"name":"a","NAME":"b"}`, duplicate: `{"name":"a","name":"b"}`, unknown: `{"name":"a","owner":"bob"}`,
				extra: map[string]string{"null body": `null`, "array body": `[]`},
			},
			{
				name: "record one", method: "POST", path: "/proxy/usage/p1/record", token: alice,
				body: `{"eventType":"error","eventData":{"errorMessage":%s}}`, text: `"ok"`, want: 201,
				caseVariant: `{"eventType":"data_transfer","EVENTTYPE":"error"}`,
				duplicate:   `{"eventType":"error","eventData":{"errorMessage":"a","errorMessage":"b"}}`,
				unknown:     `{"eventType":"error","eventData":{"errorMessage":"a","severity":"high"}}`,
				extra: map[string]string{
					"case variant nested": `{"eventType":"data_transfer","eventData":{"bytesSent":1,"BYTESSENT":2}}`,
					"proxyId in body":     `{"eventType":"error","proxyId":"p2"}`,
				},
			},
			{
				name: "record batch", method: "POST", path: "/proxy/usage/events", token: alice,
				body: `{"events":[{"proxyId":"p1","eventType":"error","eventData":{"errorMessage":%s}}]}`, text: `"ok"`, want: 201,
				caseVariant: `{"events":[{"proxyId":"p1","eventType":"error"}],"EVENTS":[{"proxyId":"p1","eventType":"data_transfer"}]}`,
				duplicate:   `{"events":[{"proxyId":"p1","eventType":"error","eventId":"a","eventId":"b"}]}`,
				unknown:     `{"events":[{"proxyId":"p1","eventType":"error","region":"eu"}]}`,
				extra: map[string]string{
					"case variant in event": `{"events":[{"proxyId":"p1","eventType":"data_transfer","EventType":"error"}]}`,
				},
			},
			{
				name: "CloudEvent", method: "POST", path: "/proxy/usage/events", token: alice, contentType: "application/cloudevents+json",
				body: ce(`,"data":{"errorMessage":%s}`), text: `"ok"`, want: 201,
				caseVariant: ce(`,"TYPE":"proxy.usage.data_transfer"`),
				duplicate:   ce(`,"id":"ce-2"`),
				unknown:     ce(`,"Region":"eu"`),
				extra: map[string]string{
					// A long (source, id) is hashed into the key, hiding the NUL.
					"NUL in hashed source": strings.Replace(ce(""), `"test"`, `"`+strings.Repeat("s", 200)+`\u0000"`, 1),
					"NUL in extension":     ce(`,"traceparent":"a\u0000"`),
				},
			},
			{
				name: "CloudEvents batch", method: "POST", path: "/proxy/usage/events", token: alice, contentType: "application/cloudevents-batch+json",
				body: `[` + ce(`,"data":{"errorMessage":%s}`) + `]`, text: `"ok"`, want: 201,
				caseVariant: `[` + ce(`,"Subject":"p2"`) + `]`,
				duplicate:   `[` + ce(`,"subject":"p2"`) + `]`,
				unknown:     `[` + ce(`,"data":{"errorMessage":"a","Region":"eu"}`) + `]`,
			},
			{
				name: "snapshot", method: "POST", path: "/proxy/usage/aggregate", token: alice,
				body: `{` + period + `,"userId":%s}`, text: `"alice"`, want: 200,
				caseVariant: `{` + period + `,"USERID":"bob"}`,
				duplicate:   `{` + period + `,"periodEnd":"2026-01-03"}`,
				unknown:     `{` + period + `,"groupBy":"tier"}`,
			},
			{
				name: "account", method: "PUT", path: "/admin/users/alice", token: admin,
				body: `{"tier":"premium","effectiveFrom":"2026-01-01","contract":{"baseMonthly":"1","perGB":"0.01","currency":%s}}`, text: `"USD"`, want: 200,
				caseVariant: `{"tier":"premium","TIER":"enterprise"}`,
				duplicate:   `{"tier":"premium","tier":"free"}`,
				unknown:     `{"tier":"premium","note":"x"}`,
				extra: map[string]string{
					"case variant in contract": `{"contract":{"baseMonthly":"1","perGB":"0.01","PerGB":"5"}}`,
					"unknown in contract":      `{"contract":{"baseMonthly":"1","perGB":"0.01","discount":"5"}}`,
				},
			},
		}
		before := fingerprint(t, env)
		for _, ep := range endpoints {
			valid := fmt.Sprintf(ep.body, ep.text)
			bodies := map[string]string{
				"case-variant name": ep.caseVariant,
				"duplicate name":    ep.duplicate,
				"unknown name":      ep.unknown,
				"invalid UTF-8":     fmt.Sprintf(ep.body, "\"a\xffb\""),
				"NUL":               fmt.Sprintf(ep.body, `"a\u0000b"`),
				"lone surrogate":    fmt.Sprintf(ep.body, `"a\ud800b"`),
				"trailing data":     valid + ` {}`,
				"trailing value":    valid + valid,
			}
			for k, v := range ep.extra {
				bodies[k] = v
			}
			for name, body := range bodies {
				t.Run(ep.name+"/"+name, func(t *testing.T) {
					r := send(env, ep.method, ep.path, ep.token, ep.contentType, body)
					r.ExpectError(t, 400, "PROXY_USAGE_001")
					onlyErrorFields(t, r)
					if after := fingerprint(t, env); after != before {
						t.Fatalf("a refused body changed the database")
					}
				})
			}
		}
		// The valid bodies pass, so each refusal above was for its fault.
		for _, ep := range endpoints {
			if r := send(env, ep.method, ep.path, ep.token, ep.contentType, fmt.Sprintf(ep.body, ep.text)); r.Status != ep.want {
				t.Errorf("%s: valid body: %d %s", ep.name, r.Status, r.Body)
			}
		}
	})
}

func TestTimestampOffsets(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		env.MustRegister(alice, "p1")
		at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
		// The same instant written with each offset: local clock = UTC + offset.
		stamp := func(hours, minutes int) string {
			return at.Add(time.Duration(hours)*time.Hour+time.Duration(minutes)*time.Minute).Format("2006-01-02T15:04:05") +
				fmt.Sprintf("+%02d:%02d", hours, minutes)
		}
		event := func(ts string) string { return `{"eventType":"error","timestamp":"` + ts + `"}` }
		before := fingerprint(t, env)
		for _, ts := range []string{stamp(24, 0), stamp(0, 60), stamp(99, 0), stamp(0, 99), strings.Replace(at.Format(time.RFC3339)+".5", "Z.5", ",5Z", 1)} {
			env.Do("POST", "/proxy/usage/p1/record", alice, event(ts)).ExpectError(t, 400, "PROXY_USAGE_001")
			r := env.Do("POST", "/proxy/usage/events", alice, `{"events":[{"proxyId":"p1","eventType":"error"},{"proxyId":"p1","eventType":"error","timestamp":"`+ts+`"}]}`)
			if m := r.ExpectError(t, 400, "PROXY_USAGE_001"); m["index"] != float64(1) {
				t.Fatalf("%s in a batch: %s", ts, r.Body)
			}
			ceBody := `{"specversion":"1.0","id":"x","source":"s","type":"proxy.usage.error","subject":"p1","time":"` + ts + `"}`
			send(env, "POST", "/proxy/usage/events", alice, "application/cloudevents+json", ceBody).ExpectError(t, 400, "PROXY_USAGE_001")
		}
		if fingerprint(t, env) != before {
			t.Fatal("refused timestamps stored something")
		}
		// The largest offsets RFC 3339 allows are fine, and mean the instant.
		for _, ts := range []string{stamp(23, 59), stamp(0, 0), at.Add(-23*time.Hour-59*time.Minute).Format("2006-01-02T15:04:05") + "-23:59"} {
			if r := env.Do("POST", "/proxy/usage/p1/record", alice, event(ts)); r.Status != 201 {
				t.Fatalf("%s: %d %s", ts, r.Status, r.Body)
			}
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE time = $1`, at); n != 3 {
			t.Fatalf("%d events at %v, want 3", n, at)
		}
	})
}

func TestCSVFormulaInjection(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		ids := []string{"-1", "-cmd", "--", "p-ok"}
		var events []string
		for _, id := range ids {
			env.MustRegister(alice, id)
			events = append(events, `{"proxyId":"`+id+`","eventType":"data_transfer","eventData":{"bytesSent":100}}`)
		}
		if r := env.Do("POST", "/proxy/usage/events", alice, `{"events":[`+strings.Join(events, ",")+`]}`); r.Status != 201 {
			t.Fatalf("record: %d %s", r.Status, r.Body)
		}
		day := time.Now().UTC().Format("2006-01-02")
		rows := parseCSV(t, env.Do("GET", "/proxy/usage/report?groupBy=proxy&format=csv&startDate="+day+"&endDate="+day, alice, nil), "report-proxy-")
		want := map[string]string{"'-1": "100", "'-cmd": "100", "'--": "100", "p-ok": "100", "total": "400"}
		got := map[string]string{}
		for _, row := range rows[1:] {
			got[row[0]] = row[2] // bytesSent: a number, written as one
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("report CSV first column and bytesSent = %v, want %v", got, want)
		}
		// The JSON answer keeps the ids as they are.
		if r := env.Do("GET", "/proxy/usage/report?groupBy=proxy&startDate="+day+"&endDate="+day, alice, nil); !bytes.Contains(r.Body, []byte(`"proxyId":"-1"`)) {
			t.Fatalf("JSON report: %s", r.Body)
		}
	})
}

func TestListProxiesPagination(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		bob := apptest.Token(t, "bob")
		for i := range 25 {
			env.MustRegister(alice, fmt.Sprintf("p%02d", (i*7)%25)) // registered out of order
		}
		env.MustRegister(bob, "b1")
		env.MustRegister(bob, "p99")
		if r := env.Do("DELETE", "/proxies/p03", alice, nil); r.Status != 204 {
			t.Fatalf("archive: %d", r.Status)
		}
		type page struct {
			Proxies []struct {
				ProxyID string `json:"proxyId"`
			} `json:"proxies"`
			Count     int     `json:"count"`
			NextAfter *string `json:"nextAfter"`
		}
		get := func(query string) page {
			t.Helper()
			var p page
			r := env.Do("GET", "/proxies"+query, alice, nil)
			if r.Status != 200 {
				t.Fatalf("GET /proxies%s: %d %s", query, r.Status, r.Body)
			}
			r.Decode(t, &p)
			if p.Count != len(p.Proxies) {
				t.Fatalf("count %d for a page of %d", p.Count, len(p.Proxies))
			}
			return p
		}
		full := get("")
		if full.Count != 25 || full.NextAfter != nil {
			t.Fatalf("full list: %d proxies, nextAfter %v", full.Count, full.NextAfter)
		}
		var all []string
		for i, p := range full.Proxies {
			all = append(all, p.ProxyID)
			if want := fmt.Sprintf("p%02d", i); p.ProxyID != want {
				t.Fatalf("full list[%d] = %s, want %s (ascending ids)", i, p.ProxyID, want)
			}
		}
		// Walk with limit 10: 10, 10, 5, each cursor the page's last id.
		var walked []string
		sizes := []int{}
		query := "?limit=10"
		for {
			p := get(query)
			sizes = append(sizes, p.Count)
			for _, x := range p.Proxies {
				walked = append(walked, x.ProxyID)
			}
			if p.NextAfter == nil {
				break
			}
			if *p.NextAfter != p.Proxies[len(p.Proxies)-1].ProxyID {
				t.Fatalf("nextAfter %s is not the page's last id", *p.NextAfter)
			}
			query = "?limit=10&after=" + *p.NextAfter
		}
		if fmt.Sprint(sizes) != "[10 10 5]" || strings.Join(walked, ",") != strings.Join(all, ",") {
			t.Fatalf("walk: pages %v, ids %v, want %v", sizes, walked, all)
		}
		// A page that ends exactly at the last proxy has no next one; a
		// cursor need not exist; the other user's proxies never show.
		if p := get("?limit=25"); p.Count != 25 || p.NextAfter != nil {
			t.Fatalf("limit=25: %d, nextAfter %v", p.Count, p.NextAfter)
		}
		if p := get("?limit=2&after=p055"); p.Count != 2 || p.Proxies[0].ProxyID != "p06" || *p.NextAfter != "p07" {
			t.Fatalf("after=p055: %+v", p)
		}
		if p := get("?after=p24"); p.Count != 0 || p.NextAfter != nil || p.Proxies == nil {
			t.Fatalf("after the last: %+v", p)
		}
		for _, q := range []string{"limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=+5", "limit=1.5", "limit=", "limit=99999999999999999999",
			"limit=5&limit=6", "after=", "after=bad%20id", "after=.."} {
			env.Do("GET", "/proxies?"+q, alice, nil).ExpectError(t, 400, "PROXY_USAGE_001")
		}
	})
}

func TestContractBounds(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		admin := apptest.Token(t, "root", "admin")
		put := func(base, perGB string) apptest.Response {
			return env.Do("PUT", "/admin/users/carol", admin, map[string]any{"tier": "enterprise",
				"contract": map[string]string{"baseMonthly": base, "perGB": perGB}})
		}
		if r := put("1", "1"); r.Status != 200 {
			t.Fatalf("first contract: %d %s", r.Status, r.Body)
		}
		before := fingerprint(t, env)
		for _, c := range [][2]string{
			{"1", "999999999999.999999999"}, {"1", "1000000.000001"}, {"1", "1000001"}, {"1000000000.000001", "1"}, {"1000000001", "1"},
			{"1", "0.0000001"}, {"0.1234567", "1"}, {"-1", "1"}, {"1", "-0"}, {"1e3", "1"}, {"1", "1E-2"}, {" 1", "1"}, {"1.", "1"},
			{".5", "1"}, {"+1", "1"}, {"", "1"}, {"1", "NaN"}, {"1", strings.Repeat("9", 40)},
		} {
			put(c[0], c[1]).ExpectError(t, 400, "PROXY_USAGE_001")
		}
		if fingerprint(t, env) != before {
			t.Fatal("a refused contract changed the database")
		}
		// The bounds themselves are fine, and bill.
		if r := put("1000000000", "1000000.000000"); r.Status != 200 {
			t.Fatalf("largest contract: %d %s", r.Status, r.Body)
		}
		if r := put("0.000001", "0"); r.Status != 200 {
			t.Fatalf("smallest contract: %d %s", r.Status, r.Body)
		}
		if r := put("1000000000", "1000000"); r.Status != 200 {
			t.Fatalf("largest contract: %d %s", r.Status, r.Body)
		}
		day := time.Now().UTC().Format("2006-01-02")
		if r := env.Do("GET", "/proxy/usage/billing?userId=carol&periodStart="+day+"&periodEnd="+day, admin, nil); r.Status != 200 {
			t.Fatalf("bill on the largest contract: %d %s", r.Status, r.Body)
		}
	})
}

// rejectedEvents scrapes the rejected-events counter from /metrics.
func rejectedEvents(t *testing.T, env *apptest.Env) int {
	t.Helper()
	return int(scrapeMetric(t, env, `proxyusage_ingest_events_total{result="rejected"}`))
}

// scrapeMetric returns the value of series (name and labels as
// exposed) from /metrics.
func scrapeMetric(t *testing.T, env *apptest.Env, series string) float64 {
	t.Helper()
	r := env.Do("GET", "/metrics", "", nil)
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s = %q", series, v)
			}
			return n
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", series, r.Body)
	return 0
}

func TestRejectedCounter(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		env.MustRegister(alice, "p1")
		ok := `{"proxyId":"p1","eventType":"error"}`
		for _, c := range []struct {
			name, path, contentType, body string
			status                        int
			rejected                      int
		}{
			{"one event to an unknown proxy", "/proxy/usage/nope/record", "", `{"eventType":"error"}`, 404, 1},
			{"one invalid event", "/proxy/usage/p1/record", "", `{"eventType":"bogus"}`, 400, 1},
			{"unreadable body", "/proxy/usage/p1/record", "", `{`, 400, 1},
			{"invalid event at index 1 of 3", "/proxy/usage/events", "", `{"events":[` + ok + `,{"proxyId":"p1","eventType":"bogus"},` + ok + `]}`, 400, 3},
			{"unknown proxy at index 0 of 3", "/proxy/usage/events", "", `{"events":[{"proxyId":"nope","eventType":"error"},` + ok + `,` + ok + `]}`, 404, 3},
			{"unknown proxy at index 2 of 3", "/proxy/usage/events", "", `{"events":[` + ok + `,` + ok + `,{"proxyId":"nope","eventType":"error"}]}`, 404, 3},
			{"unknown proxy before an invalid event", "/proxy/usage/events", "", `{"events":[{"proxyId":"nope","eventType":"error"},{"proxyId":"p1"}]}`, 404, 2},
			{"empty batch", "/proxy/usage/events", "", `{"events":[]}`, 400, 1},
			{"CloudEvents batch, invalid at 1 of 2", "/proxy/usage/events", "application/cloudevents-batch+json",
				`[{"specversion":"1.0","id":"1","source":"s","type":"proxy.usage.error","subject":"p1"},{"specversion":"1.0"}]`, 400, 2},
			{"CloudEvents batch to an unknown proxy", "/proxy/usage/events", "application/cloudevents-batch+json",
				`[{"specversion":"1.0","id":"1","source":"s","type":"proxy.usage.error","subject":"nope"}]`, 404, 1},
			{"stored batch", "/proxy/usage/events", "", `{"events":[` + ok + `,` + ok + `]}`, 201, 0},
		} {
			before := rejectedEvents(t, env)
			if r := send(env, "POST", c.path, alice, c.contentType, c.body); r.Status != c.status {
				t.Fatalf("%s: %d %s", c.name, r.Status, r.Body)
			}
			if got := rejectedEvents(t, env) - before; got != c.rejected {
				t.Errorf("%s: rejected counter +%d, want +%d", c.name, got, c.rejected)
			}
		}
	})
}
