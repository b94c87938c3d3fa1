package store

import (
	"fmt"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/ingest"
	"proxyusage/internal/rollup"
)

// The one mapping of an ingest.Event to a usage_events row. Every path that
// stores events uses it: the writer's COPY and its single-statement
// unnest, and bulk seeding (internal/workload).

// eventTable lists the usage_events columns an event fills, in row order,
// with their SQL types (the unnest path sends one typed array a column).
// received_at is left out: it defaults to now(), the transaction's start.
var eventTable = [...]struct{ name, sqlType string }{
	{"time", "timestamptz"},
	{"proxy_id", "text"},
	{"event_type", "text"},
	{"event_id", "text"},
	{"connection_id", "text"},
	{"bytes_sent", "int8"},
	{"bytes_received", "int8"},
	{"duration_us", "int8"},
	{"latency_us", "int8"},
	{"latency_bucket", "int2"},
	{"error_message", "text"},
	{"ip_address", "inet"},
	// An eventId in the canonical text form of a uuid (what clients
	// generating uuid4 ids send) is stored here, in 16 bytes, and event_id
	// is NULL: a random id is a third of a compressed row as text.
	// coalesce(event_id, event_uuid::text) is the id as sent.
	{"event_uuid", "uuid"},
}

// eventRow is a usage_events row in EventColumns order.
type eventRow = [len(eventTable)]any

// EventColumns are the usage_events columns an event fills, in row order.
var EventColumns = func() []string {
	names := make([]string, len(eventTable))
	for i, c := range eventTable {
		names[i] = c.name
	}
	return names
}()

// toRow fills r with e's values: NULL (nil) for an empty key, connection id
// or error message, a duration or latency the event does not have, and a
// missing address. The latency bucket is derived here, at ingest, so
// histograms are a plain GROUP BY on both backends.
func toRow(e *ingest.Event, r *eventRow) {
	r[0], r[1], r[2], r[3], r[4] = e.Time, e.ProxyID, e.Type, nullText(e.EventID), nullText(e.ConnectionID)
	r[12] = nil
	if u, ok := canonicalUUID(e.EventID); ok {
		r[3], r[12] = nil, u
	}
	r[5], r[6] = e.BytesSent, e.BytesReceived
	r[7], r[8], r[9] = nil, nil, nil
	if e.HasDuration {
		r[7] = e.DurationUS
	}
	if e.HasLatency {
		r[8], r[9] = e.LatencyUS, rollup.LatencyBucket(e.LatencyUS)
	}
	r[10], r[11] = nullText(e.ErrorMessage), nil
	if e.IP.IsValid() {
		r[11] = e.IP
	}
}

// canonicalUUID parses s if it is a uuid exactly as PostgreSQL prints one
// (36 characters, lower-case hex, hyphens after the 8th, 12th, 16th and
// 20th digit), so that event_uuid::text gives s back.
func canonicalUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 {
		return u, false
	}
	n := 0
	for i := 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return u, false
			}
			continue
		}
		var v byte
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		default:
			return u, false
		}
		u[n/2] |= v << (4 * (1 - n%2))
		n++
	}
	return u, true
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// CopySource streams events into COPY as rows of EventColumns followed by
// extra: the same value of each further column on every row (bulk
// seeding sets received_at).
func CopySource(events []*ingest.Event, extra ...any) pgx.CopyFromSource {
	return &copySource{events: events, i: -1, row: make([]any, len(eventTable)+len(extra)), extra: extra}
}

type copySource struct {
	events []*ingest.Event
	i      int
	r      eventRow
	row    []any
	extra  []any
}

func (s *copySource) Next() bool {
	s.i++
	return s.i < len(s.events)
}

func (s *copySource) Values() ([]any, error) {
	toRow(s.events[s.i], &s.r)
	copy(s.row, s.r[:])
	copy(s.row[len(s.r):], s.extra)
	return s.row, nil
}

func (s *copySource) Err() error { return nil }

// eventArrays returns the events column by column, one array a column of
// EventColumns, for unnestEvents.
func eventArrays(events []*ingest.Event) []any {
	cols := make([][]any, len(eventTable))
	for c := range cols {
		cols[c] = make([]any, len(events))
	}
	var r eventRow
	for i, e := range events {
		toRow(e, &r)
		for c := range cols {
			cols[c][i] = r[c]
		}
	}
	out := make([]any, len(cols))
	for c := range cols {
		out[c] = cols[c]
	}
	return out
}

// unnestEvents is the FROM item of a flush's candidates sent as
// parameters: $first their idempotency keys (uuid[], NULL when keyless),
// then their requests (int4[]), then eventArrays' columns.
func unnestEvents(first int) string {
	params, names := fmt.Sprintf("$%d::uuid[], $%d::int4[]", first, first+1), "key, req"
	for i, c := range eventTable {
		params += fmt.Sprintf(", $%d::%s[]", first+2+i, c.sqlType)
		names += ", " + c.name
	}
	return "unnest(" + params + ") AS e(" + names + ")"
}
