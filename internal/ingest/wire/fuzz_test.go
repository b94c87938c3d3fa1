package wire

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
)

var fuzzNow = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)

func fuzzDecoder() Decoder {
	return Decoder{Window: ingest.Window{Late: 35 * 24 * time.Hour, Future: 5 * time.Minute}, Now: func() time.Time { return fuzzNow }}
}

var eventSeeds = []string{
	`{"eventType":"connection_start","eventData":{"connectionId":"c1","ipAddress":"10.0.0.1"}}`,
	`{"eventType":"connection_end","eventId":"e1","timestamp":"2026-06-15T11:00:00.123456Z","eventData":{"connectionId":"c1","durationSeconds":1.5,"bytesSent":10,"bytesReceived":20}}`,
	`{"eventType":"data_transfer","eventData":{"dataBytes":9223372036854775807,"latencyMs":0.001}}`,
	`{"eventType":"error","eventData":{"errorMessage":"timeout \u00e9","ipAddress":"2001:db8::1"}}`,
	`{"eventType":"error","eventType":"error"}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":1,"dataBytes":1}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":-0}}`,
	`{"eventType":"data_transfer","eventData":{"latencyMs":1e308}}`,
	`{"eventType":"data_transfer","timestamp":"2026-06-15T12:04:59+00:00"}`,
	`[]`, `null`, `{"eventType":"error"} trailing`, "\x00", `{"eventData":{"ipAddress":"::ffff:1.2.3.4"},"eventType":"error"}`,
}

// checkEvent asserts the invariants every accepted event must hold.
func checkEvent(t *testing.T, e ingest.Event) {
	switch e.Type {
	case ingest.ConnectionStart, ingest.ConnectionEnd, ingest.DataTransfer, ingest.ErrorEvent:
	default:
		t.Fatalf("accepted type %q", e.Type)
	}
	if e.BytesSent < 0 || e.BytesReceived < 0 || e.DurationUS < 0 || e.LatencyUS < 0 {
		t.Fatalf("accepted negative number %+v", e)
	}
	if e.BytesSent > 1<<50 || e.BytesReceived > 1<<50 || e.DurationUS > 31_536_000e6 || e.LatencyUS > 3_600_000e3 {
		t.Fatalf("accepted a number beyond its bound %+v", e)
	}
	for _, s := range []string{e.EventID, e.ConnectionID, e.ErrorMessage} {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			t.Fatalf("accepted text PostgreSQL cannot store: %q", s)
		}
	}
	if utf8.RuneCountInString(e.EventID) > ingest.MaxIDLength || utf8.RuneCountInString(e.ConnectionID) > ingest.MaxIDLength ||
		utf8.RuneCountInString(e.ErrorMessage) > ingest.MaxErrorMessageLength {
		t.Fatalf("accepted over-long text %+v", e)
	}
	if (e.Type == ingest.ConnectionStart || e.Type == ingest.ConnectionEnd) && e.ConnectionID == "" {
		t.Fatalf("accepted %s without connectionId", e.Type)
	}
	if e.Time.After(fuzzNow.Add(5*time.Minute)) || e.Time.Before(fuzzNow.Add(-35*24*time.Hour)) || e.Time.Location() != time.UTC {
		t.Fatalf("accepted timestamp %v outside the window", e.Time)
	}
	if e.Time.Nanosecond()%1000 != 0 {
		t.Fatalf("timestamp not truncated to microseconds: %v", e.Time)
	}
	if e.IP.IsValid() && e.IP.Zone() != "" {
		t.Fatalf("accepted zoned IP %v", e.IP)
	}
}

func checkRefusal(t *testing.T, err error) {
	var ae *apperr.Error
	if !errors.As(err, &ae) || (ae.Code != apperr.Invalid && ae.Code != apperr.TooLarge && ae.Code != apperr.NotFound) {
		t.Fatalf("refusal is not a client error: %v", err)
	}
}

func FuzzDecodeOne(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(s))
	}
	d := fuzzDecoder()
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := d.DecodeOne(body, "proxy-1")
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if e.ProxyID != "proxy-1" {
			t.Fatalf("proxy %q", e.ProxyID)
		}
		checkEvent(t, e)
	})
}

func FuzzDecodeBatch(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(`{"events":[` + strings.Replace(s, `{`, `{"proxyId":"p1",`, 1) + `]}`))
	}
	f.Add([]byte(`{"events":[]}`))
	f.Add([]byte(`{"events":[{"proxyId":"a b","eventType":"error"}]}`))
	f.Add([]byte(`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":"p","eventType":"bogus"}]}`))
	d := fuzzDecoder()
	f.Fuzz(func(t *testing.T, body []byte) {
		events, sent, err := d.DecodeBatch(body)
		if err == nil && sent != len(events) || sent < len(events) {
			t.Fatalf("%d events decoded of %d sent", len(events), sent)
		}
		if err != nil {
			checkRefusal(t, err)
			if i := apperr.IndexOf(err); i >= 0 && i != len(events) {
				t.Fatalf("error index %d but %d events precede it", i, len(events))
			}
			return
		}
		if len(events) == 0 || len(events) > ingest.MaxBatchEvents {
			t.Fatalf("accepted a batch of %d", len(events))
		}
		for _, e := range events {
			checkEvent(t, e)
		}
	})
}
