package store

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"proxyusage/internal/ingest"
)

// benchEvents is a flush-sized set of realistic events: 1,000 events over
// 50 proxies, connection lifecycles with keys, bytes and latencies.
func benchEvents(n int) []ingest.Event {
	t0 := time.Date(2026, 6, 15, 11, 0, 0, 0, time.UTC)
	out := make([]ingest.Event, n)
	for i := range out {
		e := ingest.Event{ProxyID: fmt.Sprintf("proxy-%d", i%50), EventID: fmt.Sprintf("evt-%d", i),
			Time: t0.Add(time.Duration(i) * time.Millisecond), ConnectionID: fmt.Sprintf("c-%d", i/3),
			IP: netip.AddrFrom4([4]byte{10, 1, byte(i), 3})}
		switch i % 3 {
		case 0:
			e.Type, e.LatencyUS, e.HasLatency = ingest.ConnectionStart, 35_000+int64(i), true
		case 1:
			e.Type, e.BytesSent, e.BytesReceived = ingest.DataTransfer, 200_000, 8_000
		default:
			e.Type, e.DurationUS, e.HasDuration = ingest.ConnectionEnd, 20_000_000, true
		}
		out[i] = e
	}
	return out
}

// BenchmarkFlushPrepare is the in-memory work of a large flush of 1,000
// events: authorisation against the looked-up proxies, the distinct keys
// in claim order, the rollup deltas and the touched connections.
func BenchmarkFlushPrepare(b *testing.B) {
	events := benchEvents(1000)
	batch := []*pending{{events: events}}
	for b.Loop() {
		st := &flushState{outs: make([]outcome, 1), live: make([]bool, 1)}
		st.authorize(batch, nil)
		st.candidates(batch)
		for _, row := range Deltas(st.ev).ByUser(func(p string) string { return p[:2] }) {
			row.CopyRow()
		}
		ConnectionEventsOf(st.ev, func(p string) string { return p[:2] })
	}
}

// BenchmarkEventSource is the COPY source feeding 1,000 events to pgx's
// binary COPY into usage_events (the source the staging table used to
// have).
func BenchmarkEventSource(b *testing.B) {
	events := benchEvents(1000)
	ptrs := make([]*ingest.Event, len(events))
	for i := range events {
		ptrs[i] = &events[i]
	}
	for b.Loop() {
		src := CopySource(ptrs)
		for src.Next() {
			if _, err := src.Values(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
