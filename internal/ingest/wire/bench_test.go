package wire

import "testing"

func BenchmarkDecodeOne(b *testing.B) {
	body := []byte(`{"eventType":"connection_end","eventId":"evt-42","timestamp":"2026-06-15T11:00:00.123456Z","eventData":{"connectionId":"c-42","durationSeconds":12.5,"bytesSent":12345,"bytesReceived":678,"ipAddress":"10.1.2.3"}}`)
	d := fuzzDecoder()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := d.DecodeOne(body, "proxy-1"); err != nil {
			b.Fatal(err)
		}
	}
}
