package http_test

// Numbers at their limits: per-event bounds, and sums that pass 2^63. One
// proxy-day of 9,000 events of the largest accepted byte count holds
// 10,133,099,161,583,616,000 bytes (more than an int64); every read that
// covers it, and the bill, must serve the exact integer, before and after
// the rollup, on every backend. The reference is math/big over the events
// sent.

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/rollup"
)

const maxEventBytes = 1 << 50

// bigTotals are the reference sums of a group of events.
type bigTotals struct {
	sent, recv *big.Int
	events     int64
}

func (b *bigTotals) add(o bigTotals) {
	if b.sent == nil {
		b.sent, b.recv = new(big.Int), new(big.Int)
	}
	if o.sent != nil {
		b.sent.Add(b.sent, o.sent)
		b.recv.Add(b.recv, o.recv)
	}
	b.events += o.events
}

func (b bigTotals) total() *big.Int {
	if b.sent == nil {
		return new(big.Int)
	}
	return new(big.Int).Add(b.sent, b.recv)
}

// numbersRef holds the reference per proxy and day.
type numbersRef map[string]map[string]*bigTotals

func (r numbersRef) add(proxy, day string, sent, recv int64) {
	if r[proxy] == nil {
		r[proxy] = map[string]*bigTotals{}
	}
	if r[proxy][day] == nil {
		r[proxy][day] = &bigTotals{}
	}
	r[proxy][day].add(bigTotals{sent: big.NewInt(sent), recv: big.NewInt(recv), events: 1})
}

// sum adds up the given proxies on the given days.
func (r numbersRef) sum(proxies []string, days []string) bigTotals {
	var t bigTotals
	t.add(bigTotals{})
	for _, p := range proxies {
		for _, d := range days {
			if x := r[p][d]; x != nil {
				t.add(*x)
			}
		}
	}
	return t
}

// decodeNumbers decodes a JSON body keeping numbers' text.
func decodeNumbers(t *testing.T, r apptest.Response, where string) map[string]any {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("%s: status %d: %s", where, r.Status, r.Body)
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v: %s", where, err, r.Body)
	}
	return m
}

// checkBytes compares a metrics object's byte totals and event count with
// the reference, digit for digit.
func checkBytes(t *testing.T, where string, got any, want bigTotals) {
	t.Helper()
	m, ok := got.(map[string]any)
	if !ok {
		t.Errorf("%s: metrics = %v", where, got)
		return
	}
	for field, w := range map[string]*big.Int{"bytesSent": want.sent, "bytesReceived": want.recv, "totalBytes": want.total()} {
		if w == nil {
			w = new(big.Int)
		}
		if n, ok := m[field].(json.Number); !ok || string(n) != w.String() {
			t.Errorf("%s: %s = %v, want %s", where, field, m[field], w)
		}
	}
	if n, ok := m["eventCount"].(json.Number); !ok || string(n) != fmt.Sprint(want.events) {
		t.Errorf("%s: eventCount = %v, want %d", where, m["eventCount"], want.events)
	}
}

func readCSV(t *testing.T, r apptest.Response, where string) [][]string {
	t.Helper()
	if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("%s: %d %s: %s", where, r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	rows, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return rows
}

func TestByteTotalsPast2To63(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		admin := apptest.Token(t, "root", "admin")
		svc := apptest.Token(t, "ingestor", "service")
		whale, minnow := apptest.Token(t, "whale"), apptest.Token(t, "minnow")
		env.MustRegister(whale, "whale-a")
		env.MustRegister(whale, "whale-b")
		env.MustRegister(minnow, "minnow-a")

		today := time.Now().UTC().Truncate(24 * time.Hour)
		day := func(n int) time.Time { return today.AddDate(0, 0, -n) }
		ds := func(n int) string { return day(n).Format("2006-01-02") }
		from, to := 3, 1 // the period: today-3 .. today-1
		period := []string{ds(3), ds(2), ds(1)}
		if r := env.Do("PUT", "/admin/users/whale", admin, map[string]any{"tier": "premium", "effectiveFrom": ds(from)}); r.Status != 200 {
			t.Fatalf("set tier: %d %s", r.Status, r.Body)
		}

		ref := numbersRef{}
		var batch []map[string]any
		flush := func() {
			t.Helper()
			if len(batch) == 0 {
				return
			}
			r := env.Do("POST", "/proxy/usage/events", svc, map[string]any{"events": batch})
			if r.Status != http.StatusCreated || r.JSON(t)["accepted"] != float64(len(batch)) {
				t.Fatalf("batch: %d %s", r.Status, r.Body)
			}
			batch = batch[:0]
		}
		event := func(proxy string, d int, offset time.Duration, data map[string]any) {
			sent, _ := data["bytesSent"].(int64)
			if v, ok := data["dataBytes"].(int64); ok {
				sent = v
			}
			recv, _ := data["bytesReceived"].(int64)
			typ := "data_transfer"
			if _, ok := data["durationSeconds"]; ok {
				typ = "connection_end"
			}
			batch = append(batch, map[string]any{"proxyId": proxy, "eventType": typ,
				"timestamp": day(d).Add(time.Hour + offset).Format(time.RFC3339Nano), "eventData": data})
			ref.add(proxy, ds(d), sent, recv)
			if len(batch) == 1000 {
				flush()
			}
		}
		// 9,000 events of 2^50 bytes on one proxy-day: past 2^63.
		for i := range 9000 {
			event("whale-a", 1, time.Duration(i)*time.Millisecond, map[string]any{"bytesSent": int64(maxEventBytes)})
		}
		// A few more on other days and proxies, and the other tenant.
		event("whale-a", 2, 0, map[string]any{"bytesReceived": int64(maxEventBytes)})
		event("whale-a", 2, time.Second, map[string]any{"dataBytes": int64(maxEventBytes), "bytesReceived": int64(maxEventBytes)})
		event("whale-b", 1, 0, map[string]any{"bytesSent": int64(maxEventBytes), "bytesReceived": int64(12345)})
		event("whale-b", 1, time.Second, map[string]any{"connectionId": "c1", "durationSeconds": 31_536_000, "latencyMs": 3_600_000,
			"bytesSent": int64(maxEventBytes)})
		event("whale-b", 3, 0, map[string]any{"bytesSent": int64(1)})
		event("minnow-a", 1, 0, map[string]any{"bytesSent": int64(1000), "bytesReceived": int64(maxEventBytes)})
		flush()
		if ref["whale-a"][ds(1)].total().Cmp(new(big.Int).Lsh(big.NewInt(1), 63)) <= 0 {
			t.Fatal("the workload does not pass 2^63")
		}

		whaleProxies := []string{"whale-a", "whale-b"}
		q := fmt.Sprintf("startDate=%s&endDate=%s", ds(from), ds(to))
		pq := fmt.Sprintf("periodStart=%s&periodEnd=%s", ds(from), ds(to))
		check := func(phase string) {
			t.Helper()
			get := func(path, tok string) map[string]any {
				t.Helper()
				return decodeNumbers(t, env.Do("GET", path, tok, nil), phase+" GET "+path)
			}
			// One proxy: a day, a range, its lifetime.
			for _, p := range whaleProxies {
				for _, d := range period {
					m := get("/proxy/usage/"+p+"/metrics/"+d, whale)
					checkBytes(t, phase+" daily "+p+" "+d, m["metrics"], ref.sum([]string{p}, []string{d}))
				}
				rg := get("/proxy/usage/"+p+"/metrics?"+q, whale)
				rows, _ := rg["metrics"].([]any)
				if len(rows) != len(period) {
					t.Fatalf("%s range %s: %d rows", phase, p, len(rows))
				}
				for i, d := range period {
					checkBytes(t, phase+" range "+p+" "+d, rows[i], ref.sum([]string{p}, []string{d}))
				}
				csvRows := readCSV(t, env.Do("GET", "/proxy/usage/"+p+"/metrics?format=csv&"+q, whale, nil), phase+" range CSV "+p)
				for i, d := range period {
					if row := csvRows[i+1]; row[0] != d || row[4] != ref.sum([]string{p}, []string{d}).total().String() {
						t.Errorf("%s range CSV %s: row %v, want %s totalBytes %s", phase, p, row, d, ref.sum([]string{p}, []string{d}).total())
					}
				}
				s := get("/proxy/usage/"+p+"/summary", whale)
				checkBytes(t, phase+" summary "+p, s["totals"], ref.sum([]string{p}, period))
			}
			// Exact averages next to a huge byte total.
			if m := get("/proxy/usage/whale-b/metrics/"+ds(1), whale)["metrics"].(map[string]any); fmt.Sprint(m["avgConnectionDurationSeconds"]) != "31536000" ||
				fmt.Sprint(m["maxLatencyMs"]) != "3600000" {
				t.Errorf("%s: whale-b averages %v, %v", phase, m["avgConnectionDurationSeconds"], m["maxLatencyMs"])
			}

			// The user's report, by day and by proxy, in JSON and CSV.
			whaleTotal := ref.sum(whaleProxies, period)
			rep := get("/proxy/usage/report?groupBy=day&"+q, whale)
			rows, _ := rep["rows"].([]any)
			for i, d := range period {
				checkBytes(t, phase+" report by day "+d, rows[i], ref.sum(whaleProxies, []string{d}))
			}
			checkBytes(t, phase+" report by day totals", rep["totals"], whaleTotal)
			rep = get("/proxy/usage/report?groupBy=proxy&"+q, whale)
			rows, _ = rep["rows"].([]any)
			if len(rows) != 2 {
				t.Fatalf("%s report by proxy: %d rows", phase, len(rows))
			}
			for i, p := range whaleProxies {
				checkBytes(t, phase+" report by proxy "+p, rows[i], ref.sum([]string{p}, period))
			}
			checkBytes(t, phase+" report by proxy totals", rep["totals"], whaleTotal)
			for _, by := range []string{"day", "proxy"} {
				csvRows := readCSV(t, env.Do("GET", "/proxy/usage/report?format=csv&groupBy="+by+"&"+q, whale, nil), phase+" report CSV")
				last := csvRows[len(csvRows)-1]
				if last[0] != "total" || last[2] != whaleTotal.sent.String() || last[3] != whaleTotal.recv.String() || last[4] != whaleTotal.total().String() {
					t.Errorf("%s report CSV by %s: total row %v, want %s %s %s", phase, by, last, whaleTotal.sent, whaleTotal.recv, whaleTotal.total())
				}
			}

			// Aggregation, live and snapshotted (and what the snapshot stored).
			checkBytes(t, phase+" aggregation", get("/proxy/usage/aggregation?"+pq, whale)["totals"], whaleTotal)
			snap := decodeNumbers(t, env.Do("POST", "/proxy/usage/aggregate", whale, map[string]string{"periodStart": ds(from), "periodEnd": ds(to)}), phase+" POST aggregate")
			agg, _ := snap["aggregation"].(map[string]any)
			checkBytes(t, phase+" POST aggregate", agg["totals"], whaleTotal)
			var stored string
			if err := env.DB.QueryRow(context.Background(), `SELECT totals->>'totalBytes' FROM proxy_usage_aggregation WHERE user_id = 'whale'`).Scan(&stored); err != nil || stored != whaleTotal.total().String() {
				t.Errorf("%s: stored snapshot totalBytes %s, %v, want %s", phase, stored, err, whaleTotal.total())
			}

			// Every tenant's tier totals.
			tiers := get("/proxy/usage/aggregation?groupBy=tier&"+pq, admin)
			rows, _ = tiers["rows"].([]any)
			if len(rows) != 2 {
				t.Fatalf("%s groupBy=tier: %v", phase, tiers)
			}
			checkBytes(t, phase+" tier free", rows[0].(map[string]any)["totals"], ref.sum([]string{"minnow-a"}, period))
			checkBytes(t, phase+" tier premium", rows[1].(map[string]any)["totals"], whaleTotal)

			// The bill: exact GB and amounts, in JSON and CSV.
			wantItems, wantTotal := refBill(day(from), day(to), func(time.Time) string { return "premium" },
				func(d string) *big.Int { return ref.sum(whaleProxies, []string{d}).total() },
				map[string]string{"premium": "10.00"}, map[string]string{"premium": "0.01"})
			var bill struct {
				LineItems []struct{ Quantity, Unit, Amount string }
				Total     *string
			}
			r := env.Do("GET", "/proxy/usage/billing?"+pq, whale, nil)
			if r.Status != 200 {
				t.Fatalf("%s billing: %d %s", phase, r.Status, r.Body)
			}
			r.Decode(t, &bill)
			var amounts []string
			gb := new(big.Rat)
			for _, li := range bill.LineItems {
				amounts = append(amounts, li.Amount)
				if li.Unit == "GB" {
					q, ok := new(big.Rat).SetString(li.Quantity)
					if !ok {
						t.Fatalf("%s: quantity %q", phase, li.Quantity)
					}
					gb.Add(gb, q)
				}
			}
			wantGB := new(big.Rat).SetFrac(whaleTotal.total(), big.NewInt(1_000_000_000))
			if !slices.Equal(amounts, wantItems) || bill.Total == nil || *bill.Total != wantTotal || gb.Cmp(wantGB) != 0 {
				t.Errorf("%s billing: items %v total %v, %s GB; want %v total %s, %s GB: %s", phase, amounts, bill.Total,
					gb.FloatString(9), wantItems, wantTotal, wantGB.FloatString(9), r.Body)
			}
			csvRows := readCSV(t, env.Do("GET", "/proxy/usage/billing?format=csv&"+pq, whale, nil), phase+" billing CSV")
			var csvAmounts []string
			for _, row := range csvRows[1 : len(csvRows)-1] {
				csvAmounts = append(csvAmounts, row[4])
			}
			if !slices.Equal(csvAmounts, wantItems) || csvRows[len(csvRows)-1][4] != wantTotal {
				t.Errorf("%s billing CSV: %v, want items %v total %s", phase, csvRows, wantItems, wantTotal)
			}
		}

		check("pending delta, before the rollup")
		for i := 0; ; i++ {
			st, err := env.Main.Rollup.RunOnce(t.Context())
			if err != nil {
				t.Fatalf("rollup: %v", err)
			}
			if !st.Full {
				break
			}
			if i > 100 {
				t.Fatal("the rollup worker never drains")
			}
		}
		if n := env.Count(`SELECT count(*) FROM usage_rollup_deltas`); n != 0 {
			t.Fatalf("%d rollup deltas left after the rollup", n)
		}
		check("rolled up")
	})
}

// Each event number has a bound; past it the event is a 400 naming the
// field (with its index in a batch) on every ingest endpoint, and nothing
// of the request is stored.
func TestEventNumberBounds(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		at := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339Nano)
		good := map[string]any{"proxyId": "p1", "eventType": "data_transfer", "timestamp": at,
			"eventData": map[string]any{"bytesSent": maxEventBytes, "bytesReceived": maxEventBytes}}
		cases := map[string]map[string]any{
			"eventData.bytesSent":       {"bytesSent": json.Number("1125899906842625")},
			"eventData.dataBytes":       {"dataBytes": json.Number("1125899906842625")},
			"eventData.bytesReceived":   {"bytesReceived": json.Number("9223372036854775807")},
			"eventData.bytesReceived ":  {"bytesReceived": -1},
			"eventData.durationSeconds": {"connectionId": "c1", "durationSeconds": json.Number("31536000.5")},
			"eventData.latencyMs":       {"latencyMs": json.Number("3600000.001")},
		}
		for name, data := range cases {
			field := strings.TrimSpace(name)
			typ := "data_transfer"
			if _, ok := data["durationSeconds"]; ok {
				typ = "connection_end"
			}
			bad := map[string]any{"proxyId": "p1", "eventType": typ, "timestamp": at, "eventData": data}
			m := env.Do("POST", "/proxy/usage/events", tok, map[string]any{"events": []any{good, good, bad, good}}).ExpectError(t, 400, "PROXY_USAGE_001")
			if m["index"] != float64(2) || !strings.HasPrefix(m["message"].(string), field+" must be") {
				t.Errorf("batch with %s: %v", name, m)
			}
			delete(bad, "proxyId")
			m = env.Do("POST", "/proxy/usage/p1/record", tok, bad).ExpectError(t, 400, "PROXY_USAGE_001")
			if _, has := m["index"]; has || !strings.HasPrefix(m["message"].(string), field+" must be") {
				t.Errorf("single event with %s: %v", name, m)
			}
			ce := func(id string, data map[string]any) map[string]any {
				return map[string]any{"specversion": "1.0", "id": id, "source": "/edge", "type": "proxy.usage." + typ,
					"subject": "p1", "time": at, "datacontenttype": "application/json", "data": data}
			}
			body, _ := json.Marshal([]any{ce("ok", map[string]any{"connectionId": "c1", "bytesSent": 1}), ce("bad", data)})
			req := env.Request("POST", "/proxy/usage/events", tok, body)
			req.Header.Set("Content-Type", "application/cloudevents-batch+json")
			if m := env.Send(req).ExpectError(t, 400, "PROXY_USAGE_001"); m["index"] != float64(1) {
				t.Errorf("CloudEvents batch with %s: %v", name, m)
			}
		}
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 0 {
			t.Fatalf("%d events stored from refused requests", n)
		}
		// At the bounds, accepted and stored exactly.
		edge := map[string]any{"proxyId": "p1", "eventType": "connection_end", "timestamp": at, "eventData": map[string]any{
			"connectionId": "c1", "dataBytes": maxEventBytes, "bytesReceived": maxEventBytes, "durationSeconds": 31_536_000, "latencyMs": 3_600_000}}
		if r := env.Do("POST", "/proxy/usage/events", tok, map[string]any{"events": []any{edge}}); r.Status != http.StatusCreated {
			t.Fatalf("events at the bounds: %d %s", r.Status, r.Body)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE bytes_sent = $1 AND bytes_received = $1
			AND duration_us = 31536000000000 AND latency_us = 3600000000`, int64(maxEventBytes)); n != 1 {
			t.Fatal("events at the bounds not stored exactly")
		}
	})
}

// Duration sums are exact past 2^63 µs too: 300,000 connections of the
// longest accepted duration on one proxy-day. The events are written
// straight into the database (as the writer stores them, with the day's
// rollup delta): 300,000 through the API would only slow the test.
func TestDurationSumsPast2To63(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.NoWorker)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		d := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
		const n = 300_000
		ctx := context.Background()
		if _, err := env.DB.Exec(ctx, `
			INSERT INTO usage_events (time, proxy_id, event_type, connection_id, duration_us, latency_us, latency_bucket)
			SELECT $1::timestamptz + i * interval '1 ms', 'p1', 'connection_end', 'c' || i, 31536000000000, 3600000000, $3
			  FROM generate_series(1, $2::int) i`, d.Add(time.Hour), n, rollup.LatencyBucket(3_600_000_000)); err != nil {
			t.Fatal(err)
		}
		if _, err := env.DB.Exec(ctx, `
			INSERT INTO usage_rollup_deltas (user_id, proxy_ids, days, event_counts, connection_counts, success_counts, error_counts,
			       bytes_sent, bytes_received, duration_sums_us, duration_counts, latency_sums_us, latency_counts, latency_max_us,
			       first_event_at, last_event_at, latency_entries, latency_buckets, latency_samples)
			SELECT 'alice', '{p1}', ARRAY[$1::date], ARRAY[count(*)], '{0}', ARRAY[count(*)], '{0}', ARRAY[sum(bytes_sent)], ARRAY[sum(bytes_received)],
			       ARRAY[sum(duration_us)], ARRAY[count(duration_us)], ARRAY[sum(latency_us)], ARRAY[count(latency_us)], ARRAY[max(latency_us)],
			       ARRAY[min(time)], ARRAY[max(time)], '{1}', ARRAY[$2::int2], ARRAY[count(*)]
			  FROM usage_events WHERE proxy_id = 'p1'`, d, rollup.LatencyBucket(3_600_000_000)); err != nil {
			t.Fatal(err)
		}
		date := d.Format("2006-01-02")
		check := func(phase string) {
			t.Helper()
			for path, key := range map[string]string{
				"/proxy/usage/p1/metrics/" + date:                            "metrics",
				"/proxy/usage/p1/summary":                                    "totals",
				"/proxy/usage/report?startDate=" + date + "&endDate=" + date: "totals",
			} {
				m, _ := decodeNumbers(t, env.Do("GET", path, tok, nil), phase+" "+path)[key].(map[string]any)
				if fmt.Sprint(m["avgConnectionDurationSeconds"]) != "31536000" || fmt.Sprint(m["avgLatencyMs"]) != "3600000" ||
					fmt.Sprint(m["successCount"]) != fmt.Sprint(n) {
					t.Errorf("%s %s: %v", phase, path, m)
				}
			}
		}
		check("pending delta, before the rollup")
		for i := 0; ; i++ {
			st, err := env.Main.Rollup.RunOnce(t.Context())
			if err != nil {
				t.Fatalf("rollup: %v", err)
			}
			if !st.Full {
				break
			}
			if i > 100 {
				t.Fatal("the rollup worker never drains")
			}
		}
		check("rolled up")
	})
}
