package wire

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
)

func TestDecodeBatchIndexAndAlias(t *testing.T) {
	d := fuzzDecoder()
	events, _, err := d.DecodeBatch([]byte(`{"events":[
		{"proxyId":"p","eventType":"data_transfer","eventData":{"dataBytes":7}},
		{"proxyId":"p","eventType":"connection_start","eventData":{"connectionId":"c"}},
		{"proxyId":"p","eventType":"connection_end"}]}`))
	if err == nil || !strings.Contains(err.Error(), "event 2") || len(events) != 2 {
		t.Fatalf("want failure at index 2 after 2 good events, got %v, %d", err, len(events))
	}
	if events[0].BytesSent != 7 {
		t.Fatalf("dataBytes alias not mapped to bytesSent: %+v", events[0])
	}
}

// Each event number has a bound: at the bound it is stored exactly, past
// it (or negative) the event is a 400 naming the field, at its index in a
// batch, whichever endpoint it came through.
func TestNumberBounds(t *testing.T) {
	d := fuzzDecoder()
	ok := map[string]func(ingest.Event) bool{
		`"bytesSent":1125899906842624`:     func(e ingest.Event) bool { return e.BytesSent == 1<<50 },
		`"dataBytes":1125899906842624`:     func(e ingest.Event) bool { return e.BytesSent == 1<<50 },
		`"bytesReceived":1125899906842624`: func(e ingest.Event) bool { return e.BytesReceived == 1<<50 },
		`"bytesSent":0`:                    func(e ingest.Event) bool { return e.BytesSent == 0 },
		`"durationSeconds":31536000`:       func(e ingest.Event) bool { return e.HasDuration && e.DurationUS == 31_536_000_000_000 },
		`"latencyMs":3600000`:              func(e ingest.Event) bool { return e.HasLatency && e.LatencyUS == 3_600_000_000 },
	}
	for field, check := range ok {
		body := `{"eventType":"data_transfer","eventData":{` + field + `}}`
		e, err := d.DecodeOne([]byte(body), "p")
		if err != nil || !check(e) {
			t.Errorf("%s: %+v, %v", body, e, err)
		}
	}
	bad := map[string]string{
		`"bytesSent":1125899906842625`:     "eventData.bytesSent must be an integer from 0 to 1125899906842624",
		`"dataBytes":1125899906842625`:     "eventData.dataBytes must be an integer from 0 to 1125899906842624",
		`"bytesReceived":1125899906842625`: "eventData.bytesReceived must be an integer from 0 to 1125899906842624",
		`"bytesSent":9223372036854775807`:  "eventData.bytesSent must be an integer from 0 to 1125899906842624",
		`"bytesSent":9223372036854775808`:  "eventData.bytesSent must be an integer from 0 to 1125899906842624",
		`"bytesReceived":-1`:               "eventData.bytesReceived must be an integer from 0 to 1125899906842624",
		`"bytesSent":-0`:                   "eventData.bytesSent must be an integer from 0 to 1125899906842624",
		`"durationSeconds":31536000.001`:   "eventData.durationSeconds must be a number from 0 to 31536000",
		`"durationSeconds":-1`:             "eventData.durationSeconds must be a number from 0 to 31536000",
		`"latencyMs":3600000.001`:          "eventData.latencyMs must be a number from 0 to 3600000",
		`"latencyMs":1e308`:                "eventData.latencyMs must be a number from 0 to 3600000",
	}
	for field, msg := range bad {
		data := `"eventType":"data_transfer","eventData":{` + field + `}`
		_, err := d.DecodeOne([]byte(`{`+data+`}`), "p")
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Code != apperr.Invalid || ae.Message != msg || ae.Index != -1 {
			t.Errorf("single %s: %v, want %q", field, err, msg)
		}
		events, sent, err := d.DecodeBatch([]byte(`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":"p",` + data + `}]}`))
		if !errors.As(err, &ae) || ae.Code != apperr.Invalid || ae.Message != msg || ae.Index != 1 || len(events) != 1 || sent != 2 {
			t.Errorf("batch %s: %v (%d events before it), want %q at index 1", field, err, len(events), msg)
		}
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"events":[`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"proxyId":"proxy-` + strconv.Itoa(i%50) + `","eventType":"data_transfer","eventId":"evt-` + strconv.Itoa(i) +
			`","timestamp":"2026-06-15T11:00:00.123456Z","eventData":{"connectionId":"c-` + strconv.Itoa(i) +
			`","bytesSent":12345,"bytesReceived":678,"latencyMs":12.5,"ipAddress":"10.1.2.3"}}`)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	d := fuzzDecoder()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := d.DecodeBatch(body); err != nil {
			b.Fatal(err)
		}
	}
}

func TestNoDuplicateKeys(t *testing.T) {
	for body, dup := range map[string]bool{
		`{"a":{},"b":[],"c":[{},{"d":1}]}`: false,
		`{"a":{},"a":1}`:                   true,
		`{"b":[{},{"c":1,"c":2}]}`:         true,
		`[{"x":1},{"x":1}]`:                false,
		`{"a":{"a":{"a":1}}}`:              false,
	} {
		if _, _, _, err := scanBody([]byte(body)); (err != nil) != dup {
			t.Errorf("%s: %v", body, err)
		}
	}
}

func TestParseRFC3339(t *testing.T) {
	want := time.Date(2026, 6, 15, 11, 0, 0, 0, time.UTC)
	for s, ok := range map[string]bool{
		"2026-06-15T11:00:00Z":              true,
		"2026-06-15T12:30:00+01:30":         true,
		"2026-06-16T10:59:00+23:59":         true,
		"2026-06-14T11:01:00-23:59":         true,
		"2026-06-15T11:00:00-00:00":         true,
		"2026-06-15T11:00:00.000000000001Z": true,
		"2026-06-15T11:00:00+24:00":         false,
		"2026-06-15T11:00:00+00:60":         false,
		"2026-06-15T11:00:00+99:00":         false,
		"2026-06-15T11:00:00,0Z":            false,
		"2026-06-15T11:00:00.Z":             false,
		"2026-06-15t11:00:00z":              false,
		"2026-06-15T11:00:00+0100":          false,
		"2026-06-15T11:00:00":               false,
		"2026-06-15T24:00:00Z":              false,
		"2026-06-31T11:00:00Z":              false,
		"2026-06-15T11:00:60Z":              false,
	} {
		got, parsed := parseRFC3339([]byte(s))
		if parsed != ok || ok && !got.Equal(want) {
			t.Errorf("parseRFC3339(%q) = %v, %v; want ok=%v at %v", s, got, parsed, ok, want)
		}
	}
	got, _ := parseRFC3339([]byte("2026-06-15T11:00:00.1234567891Z"))
	if got.Nanosecond() != 123456789 {
		t.Errorf("fraction = %d ns, want 123456789 (truncated)", got.Nanosecond())
	}
}

// The decoder refuses, by name, what encoding/json would have let through.
func TestStrictBodies(t *testing.T) {
	d := fuzzDecoder()
	for body, want := range map[string]string{
		`{"eventType":"data_transfer","EVENTTYPE":"error"}`:             `unknown member "EVENTTYPE"`,
		`{"eventType":"error","eventData":{"ErrorMessage":"x"}}`:        `unknown member "eventData.ErrorMessage"`,
		`{"eventType":"error","proxyId":"p1"}`:                          `unknown member "proxyId"`,
		`{"eventType":"error","eventData":{"errorMessage":"a\u0000"}}`:  `NUL`,
		`{"eventType":"error","eventId":"\ud800"}`:                      `surrogate`,
		`{"eventType":"error","timestamp":"2026-06-15T11:00:00+24:00"}`: `timestamp must be RFC 3339`,
		`{"eventType":"error","timestamp":"2026-06-15T11:00:00+00:60"}`: `timestamp must be RFC 3339`,
		`{"eventType":"error"} {}`:                                      `single JSON value`,
		`null`:                                                          `JSON object`,
	} {
		_, err := d.DecodeOne([]byte(body), "p1")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeOne(%s) = %v, want an error with %q", body, err, want)
		}
	}
	for body, want := range map[string]string{
		`{"events":[{"proxyId":"p","eventType":"error"}],"EVENTS":[]}`:   `unknown member "EVENTS"`,
		`{"EVENTS":[{"proxyId":"p","eventType":"error"}]}`:               `unknown member "EVENTS"`,
		`{"events":[{"proxyId":"p","eventType":"error","PROXYID":"q"}]}`: `event 0: unknown member "PROXYID"`,
		`{"events":[{"proxyId":"p","eventType":"error"}],"events":[]}`:   `duplicate key "events"`,
	} {
		_, _, err := d.DecodeBatch([]byte(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeBatch(%s) = %v, want an error with %q", body, err, want)
		}
	}
}

func TestCloudEventNames(t *testing.T) {
	d := fuzzDecoder()
	base := `"specversion":"1.0","id":"1","source":"s","type":"proxy.usage.error","subject":"p1"`
	for body, want := range map[string]string{
		`{` + base + `,"traceparent":"00-x","dataschema":"u"}`: "",
		`{` + base + `,"ID":"2"}`:                              `unknown member "ID"`,
		`{` + base + `,"Type":"proxy.usage.data_transfer"}`:    `unknown member "Type"`,
		`{` + base + `,"data":{"ERRORMESSAGE":"x"}}`:           `unknown member "eventData.ERRORMESSAGE"`,
		`{` + base + `,"time":"2026-06-15T11:00:00+24:00"}`:    `timestamp must be RFC 3339`,
		`{` + base + `,"x_y":1}`:                               `unknown member "x_y"`,
	} {
		_, sent, err := d.DecodeCloudEvents([]byte(body), false)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) || sent != 1 {
			t.Errorf("DecodeCloudEvents(%s) = %d, %v, want %q", body, sent, err, want)
		}
	}
}
