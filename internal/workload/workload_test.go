package workload

import (
	"reflect"
	"testing"
	"time"

	"proxyusage/internal/ingest"
	"proxyusage/internal/ingest/wire"
)

var now = time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)

func gen(seed uint64, n int) *Generator {
	return New(Config{Seed: seed, Users: 10, Proxies: 50, Start: now.Add(-72 * time.Hour), End: now, Events: n})
}

func all(g *Generator) []ingest.Event {
	var out []ingest.Event
	for {
		n := len(out)
		out = g.Next(out, 777)
		if len(out) == n {
			return out
		}
	}
}

func TestGeneratorShape(t *testing.T) {
	events := all(gen(1, 20_000))
	if len(events) < 19_000 || len(events) > 20_000 {
		t.Fatalf("got %d events, want about 20000", len(events))
	}
	if !reflect.DeepEqual(events, all(gen(1, 20_000))) {
		t.Fatal("same seed, different events")
	}
	if reflect.DeepEqual(events[:100], all(gen(2, 20_000))[:100]) {
		t.Fatal("different seeds, same events")
	}
	types := map[string]int{}
	ids := map[string]bool{}
	starts := map[string]bool{}
	for i, e := range events {
		if i > 0 && e.Time.Before(events[i-1].Time) {
			t.Fatalf("event %d out of time order", i)
		}
		if e.Time.Before(now.Add(-72*time.Hour)) || !e.Time.Before(now) {
			t.Fatalf("event %d at %v outside the span", i, e.Time)
		}
		if ids[e.EventID] || e.EventID == "" {
			t.Fatalf("event id %q repeated or empty", e.EventID)
		}
		ids[e.EventID] = true
		types[e.Type]++
		switch e.Type {
		case ingest.ConnectionStart:
			starts[e.ConnectionID] = true
		case ingest.ConnectionEnd:
			if !starts[e.ConnectionID] || !e.HasDuration {
				t.Fatalf("end %d without its start or duration", i)
			}
		}
	}
	for _, typ := range []string{ingest.ConnectionStart, ingest.ConnectionEnd, ingest.DataTransfer, ingest.ErrorEvent} {
		if types[typ] == 0 {
			t.Errorf("no %s events: %v", typ, types)
		}
	}
}

// The JSON the generator sends decodes, through the service's own decoder,
// into exactly the events it describes.
func TestJSONRoundTrip(t *testing.T) {
	events := all(gen(3, 3000))
	dec := wire.Decoder{Window: ingest.Window{Late: 35 * 24 * time.Hour, Future: 5 * time.Minute}, Now: func() time.Time { return now }}
	got, _, err := dec.DecodeBatch(AppendBatch(nil, events))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, events) {
		for i := range events {
			if !reflect.DeepEqual(got[i], events[i]) {
				t.Fatalf("event %d:\n got %+v\nwant %+v", i, got[i], events[i])
			}
		}
	}
	one, err := dec.DecodeOne(AppendJSON(nil, &events[5], false), events[5].ProxyID)
	if err != nil || !reflect.DeepEqual(one, events[5]) {
		t.Fatalf("single: %+v %v", one, err)
	}
}
