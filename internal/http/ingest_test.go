package http_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

func TestRecordValidation(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		now := time.Now().UTC()
		ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339Nano) }
		cases := []struct {
			name   string
			path   string
			body   string
			status int
			code   string
		}{
			{"unknown type", "p1", `{"eventType":"bogus"}`, 400, "PROXY_USAGE_001"},
			{"missing type", "p1", `{"eventData":{}}`, 400, "PROXY_USAGE_001"},
			{"type not string", "p1", `{"eventType":5}`, 400, "PROXY_USAGE_001"},
			{"start without connectionId", "p1", `{"eventType":"connection_start"}`, 400, "PROXY_USAGE_001"},
			{"end without connectionId", "p1", `{"eventType":"connection_end","eventData":{"durationSeconds":1}}`, 400, "PROXY_USAGE_001"},
			{"empty connectionId", "p1", `{"eventType":"connection_start","eventData":{"connectionId":""}}`, 400, "PROXY_USAGE_001"},
			{"long connectionId", "p1", `{"eventType":"connection_start","eventData":{"connectionId":"` + strings.Repeat("c", 129) + `"}}`, 400, "PROXY_USAGE_001"},
			{"negative bytes", "p1", `{"eventType":"data_transfer","eventData":{"bytesSent":-1}}`, 400, "PROXY_USAGE_001"},
			{"fractional bytes", "p1", `{"eventType":"data_transfer","eventData":{"bytesReceived":1.5}}`, 400, "PROXY_USAGE_001"},
			{"exponent bytes", "p1", `{"eventType":"data_transfer","eventData":{"bytesSent":1e3}}`, 400, "PROXY_USAGE_001"},
			{"string bytes", "p1", `{"eventType":"data_transfer","eventData":{"bytesSent":"10"}}`, 400, "PROXY_USAGE_001"},
			{"overflow bytes", "p1", `{"eventType":"data_transfer","eventData":{"bytesSent":9223372036854775808}}`, 400, "PROXY_USAGE_001"},
			{"bytesSent and dataBytes", "p1", `{"eventType":"data_transfer","eventData":{"bytesSent":1,"dataBytes":1}}`, 400, "PROXY_USAGE_001"},
			{"negative duration", "p1", `{"eventType":"connection_end","eventData":{"connectionId":"c","durationSeconds":-0.5}}`, 400, "PROXY_USAGE_001"},
			{"negative latency", "p1", `{"eventType":"data_transfer","eventData":{"latencyMs":-1}}`, 400, "PROXY_USAGE_001"},
			{"latency string", "p1", `{"eventType":"data_transfer","eventData":{"latencyMs":"NaN"}}`, 400, "PROXY_USAGE_001"},
			{"bad ip", "p1", `{"eventType":"data_transfer","eventData":{"ipAddress":"300.1.1.1"}}`, 400, "PROXY_USAGE_001"},
			{"ip with zone", "p1", `{"eventType":"data_transfer","eventData":{"ipAddress":"fe80::1%eth0"}}`, 400, "PROXY_USAGE_001"},
			{"long error message", "p1", `{"eventType":"error","eventData":{"errorMessage":"` + strings.Repeat("e", 1025) + `"}}`, 400, "PROXY_USAGE_001"},
			{"NUL in error message", "p1", `{"eventType":"error","eventData":{"errorMessage":"a\u0000b"}}`, 400, "PROXY_USAGE_001"},
			{"long eventId", "p1", `{"eventType":"error","eventId":"` + strings.Repeat("i", 129) + `"}`, 400, "PROXY_USAGE_001"},
			{"empty eventId", "p1", `{"eventType":"error","eventId":""}`, 400, "PROXY_USAGE_001"},
			{"bad timestamp", "p1", `{"eventType":"error","timestamp":"yesterday"}`, 400, "PROXY_USAGE_001"},
			{"timestamp without zone", "p1", `{"eventType":"error","timestamp":"2026-01-01T00:00:00"}`, 400, "PROXY_USAGE_001"},
			{"future timestamp", "p1", `{"eventType":"error","timestamp":"` + ts(6*time.Minute) + `"}`, 400, "PROXY_USAGE_001"},
			{"too old timestamp", "p1", `{"eventType":"error","timestamp":"` + ts(-36*24*time.Hour) + `"}`, 400, "PROXY_USAGE_001"},
			{"duplicate keys", "p1", `{"eventType":"error","eventType":"data_transfer"}`, 400, "PROXY_USAGE_001"},
			{"not json", "p1", `eventType=error`, 400, "PROXY_USAGE_001"},
			{"trailing data", "p1", `{"eventType":"error"} {}`, 400, "PROXY_USAGE_001"},
			{"array body", "p1", `[]`, 400, "PROXY_USAGE_001"},
			{"empty body", "p1", ``, 400, "PROXY_USAGE_001"},
			{"unknown proxy", "nope", `{"eventType":"error"}`, 404, "PROXY_USAGE_006"},
			{"invalid proxy id", "bad%20id", `{"eventType":"error"}`, 404, "PROXY_USAGE_006"},
			{"too large", "p1", `{"eventType":"error","eventData":{"errorMessage":"` + strings.Repeat("x", 70<<10) + `"}}`, 413, "PROXY_USAGE_008"},
		}
		for _, c := range cases {
			r := env.Do(http.MethodPost, "/proxy/usage/"+c.path+"/record", tok, []byte(c.body))
			t.Run(c.name, func(t *testing.T) {
				m := r.ExpectError(t, c.status, c.code)
				if c.name == "too old timestamp" && !strings.Contains(m["message"].(string), "35 days") {
					t.Fatalf("message does not name the window: %v", m["message"])
				}
				if c.name == "future timestamp" && !strings.Contains(m["message"].(string), "5m") {
					t.Fatalf("message does not name the skew: %v", m["message"])
				}
			})
		}
		// Wrong content type.
		req, _ := http.NewRequest(http.MethodPost, env.URL+"/proxy/usage/p1/record", strings.NewReader(`{"eventType":"error"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "text/plain")
		env.Send(req).ExpectError(t, 400, "PROXY_USAGE_001")

		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 0 {
			t.Fatalf("invalid requests stored %d events", n)
		}
		if n := env.Count(`SELECT count(*) FROM usage_event_keys`); n != 0 {
			t.Fatalf("invalid requests stored %d keys", n)
		}
	})
}

func TestRecordStoresEveryField(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p.1:a-b_c")
		at := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second).Add(123456789 * time.Nanosecond)
		r := env.Do(http.MethodPost, "/proxy/usage/p.1:a-b_c/record", tok, map[string]any{
			"eventType": "connection_end", "eventId": "e-1", "timestamp": at.Format(time.RFC3339Nano),
			"eventData": map[string]any{"connectionId": "c1", "dataBytes": 100, "bytesReceived": 7,
				"durationSeconds": 1.2345675, "latencyMs": 12.5, "ipAddress": "2001:db8::1"},
		})
		if r.Status != http.StatusCreated || r.JSON(t)["duplicate"] != false {
			t.Fatalf("record: %d %s", r.Status, r.Body)
		}
		var (
			gotTime              time.Time
			typ, eid, cid, ip    string
			sent, recv, dur, lat int64
		)
		err := env.DB.QueryRow(t.Context(), `SELECT time, event_type, event_id, connection_id, bytes_sent, bytes_received,
			duration_us, latency_us, host(ip_address) FROM usage_events`).Scan(&gotTime, &typ, &eid, &cid, &sent, &recv, &dur, &lat, &ip)
		if err != nil {
			t.Fatal(err)
		}
		if !gotTime.Equal(at.Truncate(time.Microsecond)) || typ != "connection_end" || eid != "e-1" || cid != "c1" ||
			sent != 100 || recv != 7 || dur != 1234568 || lat != 12500 || ip != "2001:db8::1" {
			t.Fatalf("stored %v %s %s %s %d %d %d %d %s", gotTime, typ, eid, cid, sent, recv, dur, lat, ip)
		}
		// Default timestamp is the server's now.
		before := time.Now().UTC()
		env.Do(http.MethodPost, "/proxy/usage/p.1:a-b_c/record", tok, map[string]any{"eventType": "error"})
		var ts time.Time
		if err := env.DB.QueryRow(t.Context(), `SELECT time FROM usage_events WHERE event_type = 'error'`).Scan(&ts); err != nil {
			t.Fatal(err)
		}
		if ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Fatalf("default timestamp %v not near now %v", ts, before)
		}
		if n := env.Count(`SELECT count(*) FROM usage_rollup_deltas`); n < 1 {
			t.Fatal("no rollup delta logged")
		}
	})
}

func TestBatch(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		bob := apptest.Token(t, "bob")
		env.MustRegister(alice, "a1")
		env.MustRegister(alice, "a2")
		env.MustRegister(bob, "b1")
		env.MustRegister(alice, "gone")
		if r := env.Do(http.MethodDelete, "/proxies/gone", alice, nil); r.Status != 204 {
			t.Fatalf("archive: %d %s", r.Status, r.Body)
		}
		ev := func(p, typ string) map[string]any { return map[string]any{"proxyId": p, "eventType": typ} }
		batch := func(evs ...map[string]any) map[string]any { return map[string]any{"events": evs} }

		cases := []struct {
			name   string
			body   any
			status int
			code   string
			index  int
		}{
			{"empty", batch(), 400, "PROXY_USAGE_001", -1},
			{"no events key", map[string]any{}, 400, "PROXY_USAGE_001", -1},
			{"bad field at 1", batch(ev("a1", "error"), ev("a1", "nope")), 400, "PROXY_USAGE_001", 1},
			{"missing proxyId", batch(ev("a1", "error"), map[string]any{"eventType": "error"}), 400, "PROXY_USAGE_001", 1},
			{"other user's proxy at 2", batch(ev("a1", "error"), ev("a2", "error"), ev("b1", "error")), 404, "PROXY_USAGE_006", 2},
			{"unknown proxy at 0", batch(ev("zz", "error"), ev("a1", "error")), 404, "PROXY_USAGE_006", 0},
			{"archived at 1", batch(ev("a1", "error"), ev("gone", "error")), 409, "PROXY_USAGE_007", 1},
			{"lowest index wins: 404 before 400", batch(ev("a1", "error"), ev("b1", "error"), ev("a1", "nope")), 404, "PROXY_USAGE_006", 1},
			{"lowest index wins: 400 before 404", batch(ev("a1", "nope"), ev("b1", "error")), 400, "PROXY_USAGE_001", 0},
			{"lowest index wins: 409 before 400", batch(ev("gone", "error"), ev("a1", "nope")), 409, "PROXY_USAGE_007", 0},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				m := env.Do(http.MethodPost, "/proxy/usage/events", alice, c.body).ExpectError(t, c.status, c.code)
				idx, has := m["index"]
				if c.index < 0 && has {
					t.Fatalf("unexpected index %v", idx)
				}
				if c.index >= 0 && idx != float64(c.index) {
					t.Fatalf("index = %v, want %d", idx, c.index)
				}
			})
		}
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 0 {
			t.Fatalf("failed batches stored %d events", n)
		}

		// Over 10,000 events: 413.
		big := make([]map[string]any, 10_001)
		for i := range big {
			big[i] = ev("a1", "error")
		}
		env.Do(http.MethodPost, "/proxy/usage/events", alice, batch(big...)).ExpectError(t, 413, "PROXY_USAGE_008")
		// Over 10 MiB: 413.
		huge := `{"events":[` + strings.Repeat(`{"proxyId":"a1","eventType":"error","eventData":{"errorMessage":"`+strings.Repeat("x", 1000)+`"}},`, 10_500) + `]}`
		env.Do(http.MethodPost, "/proxy/usage/events", alice, huge).ExpectError(t, 413, "PROXY_USAGE_008")
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 0 {
			t.Fatalf("oversized batches stored %d events", n)
		}

		// Success with duplicates inside the batch and across batches.
		withID := func(p, id string) map[string]any {
			return map[string]any{"proxyId": p, "eventType": "data_transfer", "eventId": id, "eventData": map[string]any{"bytesSent": 10}}
		}
		r := env.Do(http.MethodPost, "/proxy/usage/events", alice, batch(withID("a1", "x"), withID("a1", "x"), withID("a2", "x"), ev("a1", "error")))
		if r.Status != 201 || r.JSON(t)["accepted"] != float64(3) || r.JSON(t)["duplicates"] != float64(1) {
			t.Fatalf("batch: %d %s", r.Status, r.Body)
		}
		r = env.Do(http.MethodPost, "/proxy/usage/events", alice, batch(withID("a1", "x"), withID("a2", "y")))
		if r.Status != 201 || r.JSON(t)["accepted"] != float64(1) || r.JSON(t)["duplicates"] != float64(1) {
			t.Fatalf("retry batch: %d %s", r.Status, r.Body)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 4 {
			t.Fatalf("stored %d events, want 4", n)
		}
		// A service token writes to anyone's proxy; it may not write unknown ones.
		svc := apptest.Token(t, "ingestor", "service")
		if r := env.Do(http.MethodPost, "/proxy/usage/events", svc, batch(ev("a1", "error"), ev("b1", "error"))); r.Status != 201 {
			t.Fatalf("service batch: %d %s", r.Status, r.Body)
		}
		env.Do(http.MethodPost, "/proxy/usage/events", svc, batch(ev("nope", "error"))).ExpectError(t, 404, "PROXY_USAGE_006")
	})
}

func TestIdempotency(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		at := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339Nano)
		first := env.Do(http.MethodPost, "/proxy/usage/p1/record", tok, map[string]any{
			"eventType": "data_transfer", "eventId": "dup", "timestamp": at, "eventData": map[string]any{"bytesSent": 5}})
		if first.Status != 201 || first.JSON(t)["duplicate"] != false {
			t.Fatalf("first: %d %s", first.Status, first.Body)
		}
		// The retry omits the timestamp and changes the payload: still a
		// duplicate, first write wins.
		retry := env.Do(http.MethodPost, "/proxy/usage/p1/record", tok, map[string]any{
			"eventType": "data_transfer", "eventId": "dup", "eventData": map[string]any{"bytesSent": 999}})
		if retry.Status != 200 || retry.JSON(t)["duplicate"] != true {
			t.Fatalf("retry: %d %s", retry.Status, retry.Body)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE bytes_sent = 5`); n != 1 {
			t.Fatalf("stored %d", n)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 1 {
			t.Fatalf("stored %d events", n)
		}

		// Concurrent duplicates racing from many goroutines: exactly one each.
		const keys, racers = 20, 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := map[string]int{}
		for g := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range keys {
					id := fmt.Sprintf("race-%d", k)
					var r apptest.Response
					if g%2 == 0 {
						r = env.Do(http.MethodPost, "/proxy/usage/p1/record", tok, map[string]any{"eventType": "error", "eventId": id})
					} else {
						r = env.Do(http.MethodPost, "/proxy/usage/events", tok, map[string]any{"events": []map[string]any{
							{"proxyId": "p1", "eventType": "error", "eventId": id}, {"proxyId": "p1", "eventType": "error", "eventId": id}}})
					}
					mu.Lock()
					switch {
					case r.Status == 201 && strings.Contains(string(r.Body), `"duplicate":false`):
						created[id]++
					case r.Status == 201 && strings.Contains(string(r.Body), `"accepted":1`):
						created[id]++
					case r.Status == 200 || (r.Status == 201 && strings.Contains(string(r.Body), `"accepted":0`)):
					default:
						t.Errorf("unexpected %d %s", r.Status, r.Body)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		for k := range keys {
			id := fmt.Sprintf("race-%d", k)
			if created[id] != 1 {
				t.Errorf("%s acknowledged as new %d times", id, created[id])
			}
			if n := env.Count(`SELECT count(*) FROM usage_events WHERE event_id = $1`, id); n != 1 {
				t.Errorf("%s stored %d times", id, n)
			}
		}
		// The same eventId on another proxy is a different event.
		env.MustRegister(tok, "p2")
		r := env.Do(http.MethodPost, "/proxy/usage/p2/record", tok, map[string]any{"eventType": "error", "eventId": "dup"})
		if r.Status != 201 {
			t.Fatalf("other proxy: %d %s", r.Status, r.Body)
		}
	})
}

func TestGroupCommit(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		flushes := func() float64 {
			m := env.Main.Metrics
			return counterValue(t, m.IngestFlushes.WithLabelValues("ok")) + counterValue(t, m.IngestFlushes.WithLabelValues("error"))
		}
		before := flushes()
		const clients, each = 32, 20
		var wg sync.WaitGroup
		var mu sync.Mutex
		var acked []string
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					id := fmt.Sprintf("gc-%d-%d", c, i)
					r := env.Do(http.MethodPost, "/proxy/usage/p1/record", tok, map[string]any{"eventType": "data_transfer", "eventId": id,
						"eventData": map[string]any{"bytesSent": 1}})
					if r.Status == 201 {
						mu.Lock()
						acked = append(acked, id)
						mu.Unlock()
					} else {
						t.Errorf("record: %d %s", r.Status, r.Body)
					}
				}
			}()
		}
		wg.Wait()
		if len(acked) != clients*each {
			t.Fatalf("acknowledged %d of %d", len(acked), clients*each)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE event_id = ANY($1)`, acked); n != len(acked) {
			t.Fatalf("%d of %d acknowledged events stored", n, len(acked))
		}
		tx := flushes() - before
		if tx >= float64(len(acked)) {
			t.Fatalf("%v transactions for %d requests: commits are not shared", tx, len(acked))
		}
		t.Logf("%d requests in %v transactions", len(acked), tx)
	})
}

func TestDedupWindowPruning(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	tok := apptest.Token(t, "alice")
	env.MustRegister(tok, "p1")
	rec := func() int {
		return env.Do(http.MethodPost, "/proxy/usage/p1/record", tok, map[string]any{"eventType": "error", "eventId": "k"}).Status
	}
	if s := rec(); s != 201 {
		t.Fatalf("first: %d", s)
	}
	// Inside the window the key is kept.
	if n, err := env.Main.Pruner.RunOnce(t.Context()); err != nil || n != 0 {
		t.Fatalf("pruned %d inside the window: %v", n, err)
	}
	if s := rec(); s != 200 {
		t.Fatalf("retry inside window: %d", s)
	}
	// Age the key past the 35-day window: it is forgotten, and the same id
	// is a new event again.
	if _, err := env.DB.Exec(t.Context(), `UPDATE usage_event_keys SET received_at = now() - interval '36 days'`); err != nil {
		t.Fatal(err)
	}
	if n, err := env.Main.Pruner.RunOnce(t.Context()); err != nil || n != 1 {
		t.Fatalf("pruned %d: %v", n, err)
	}
	if s := rec(); s != 201 {
		t.Fatalf("after the window: %d", s)
	}

	// The run also reports the key index against the cache it must fit
	// in, as the catalog and pg_settings state them.
	var index, buffers float64
	if err := env.DB.QueryRow(t.Context(), `
		SELECT (SELECT sum(pg_total_relation_size(indexrelid)) FROM pg_index WHERE indrelid = 'usage_event_keys'::regclass)::float8,
		       (SELECT setting::float8 * 8192 FROM pg_settings WHERE name = 'shared_buffers')`).Scan(&index, &buffers); err != nil {
		t.Fatal(err)
	}
	if got := scrapeMetric(t, env, "proxyusage_idempotency_key_index_bytes"); got != index || got <= 0 {
		t.Errorf("key index gauge %v, catalog says %v", got, index)
	}
	if got := scrapeMetric(t, env, "proxyusage_database_shared_buffers_bytes"); got != buffers || got <= 0 {
		t.Errorf("shared_buffers gauge %v, pg_settings says %v", got, buffers)
	}
}
