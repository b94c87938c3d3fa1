package http_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

func newCloudEvent(t *testing.T, id, typ, subject string, at time.Time, data map[string]any) cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("/edge/fra-1")
	e.SetType("proxy.usage." + typ)
	e.SetSubject(subject)
	e.SetTime(at)
	if data != nil {
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// CloudEvents in structured mode, sent by the official Go SDK, land like
// native events; (source, id) is the idempotency key.
func TestCloudEventsIngest(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")
		env.MustRegister(apptest.Token(t, "bob"), "b1")
		client, err := cloudevents.NewClientHTTP(cehttp.WithTarget(env.URL+"/proxy/usage/events"),
			cehttp.WithHeader("Authorization", "Bearer "+tok))
		if err != nil {
			t.Fatal(err)
		}
		ctx := cloudevents.WithEncodingStructured(context.Background())
		// Yesterday noon: the batch's events fall on one UTC day whatever
		// the time the test runs, and at+48h is in the future.
		at := time.Now().UTC().Truncate(24 * time.Hour).Add(-12*time.Hour + 123*time.Microsecond)
		send := func(e cloudevents.Event) int {
			t.Helper()
			res := client.Send(ctx, e)
			var hr *cehttp.Result
			if !cloudevents.ResultAs(res, &hr) {
				t.Fatalf("send: %v", res)
			}
			return hr.StatusCode
		}
		start := newCloudEvent(t, "evt-1", "connection_start", "p1", at, map[string]any{"connectionId": "c1", "latencyMs": 12.5})
		if s := send(start); s != 201 {
			t.Fatalf("structured event: %d", s)
		}
		// A retry of the same (source, id) is stored once.
		if s := send(start); s != 201 {
			t.Fatalf("retry: %d", s)
		}
		// Refusals keep their codes.
		if s := send(newCloudEvent(t, "evt-2", "teleport", "p1", at, nil)); s != 400 {
			t.Fatalf("unknown type: %d", s)
		}
		if s := send(newCloudEvent(t, "evt-3", "error", "b1", at, nil)); s != 404 {
			t.Fatalf("another user's proxy: %d", s)
		}
		if s := send(newCloudEvent(t, "evt-4", "data_transfer", "p1", at, map[string]any{"bytesSent": -1})); s != 400 {
			t.Fatalf("negative bytes: %d", s)
		}

		// A batch, marshalled by the SDK, with a duplicate of evt-1.
		batch := []cloudevents.Event{
			newCloudEvent(t, "evt-5", "data_transfer", "p1", at.Add(time.Minute), map[string]any{"bytesSent": 1000, "bytesReceived": 24}),
			newCloudEvent(t, "evt-6", "connection_end", "p1", at.Add(2*time.Minute), map[string]any{"connectionId": "c1", "durationSeconds": 120}),
			start,
		}
		body, err := json.Marshal(batch)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", env.URL+"/proxy/usage/events", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/cloudevents-batch+json")
		r := env.Send(req)
		if r.Status != 201 || r.JSON(t)["accepted"] != float64(2) || r.JSON(t)["duplicates"] != float64(1) {
			t.Fatalf("batch: %d %s", r.Status, r.Body)
		}
		// A bad event in a batch names its index; nothing is stored.
		bad := append(batch[:2:2], newCloudEvent(t, "evt-7", "error", "p1", at.Add(48*time.Hour), nil))
		body, _ = json.Marshal(bad)
		req, _ = http.NewRequest("POST", env.URL+"/proxy/usage/events", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/cloudevents-batch+json")
		if m := env.Send(req).ExpectError(t, 400, "PROXY_USAGE_001"); m["index"] != float64(2) {
			t.Fatalf("index %v", m["index"])
		}

		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 3 {
			t.Fatalf("stored %d events, want 3", n)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE event_id = '/edge/fra-1#evt-1' AND time = $1 AND latency_us = 12500`, at); n != 1 {
			t.Fatal("CloudEvent fields not mapped")
		}
		day := at.Format("2006-01-02")
		m := env.Do("GET", "/proxy/usage/p1/metrics/"+day, tok, nil).JSON(t)["metrics"].(map[string]any)
		if m["bytesSent"] != float64(1000) || m["successCount"] != float64(1) || m["avgConnectionDurationSeconds"] != float64(120) {
			t.Fatalf("metrics %v", m)
		}
	})
}
