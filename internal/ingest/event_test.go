package ingest

import (
	"strconv"
	"strings"
	"testing"
)

func TestDecodeBatchIndexAndAlias(t *testing.T) {
	d := fuzzDecoder()
	events, err := d.DecodeBatch([]byte(`{"events":[
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
		if _, err := d.DecodeBatch(body); err != nil {
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
		if err := noDuplicateKeys([]byte(body)); (err != nil) != dup {
			t.Errorf("%s: %v", body, err)
		}
	}
}
