// Package ingest is the domain of recording usage events: the Event, its
// limits and late-data Window, who may write into a proxy (Authorize), and
// the Recorder that decodes a request's events, authorises them and hands
// them to storage, answering through the Service interface.
//
// The wire format and the storage are sub-packages that import this one,
// so the compiler keeps the layers apart: internal/ingest/wire turns
// request bodies (native JSON, CloudEvents) into validated Events, and
// internal/ingest/store writes them (the group-commit Writer, the row
// mapping, the rollup deltas, the idempotency keys and their pruner). The
// Recorder holds them by the Decoder and Store interfaces declared here;
// internal/app wires the implementations.
package ingest

import (
	"fmt"
	"net/netip"
	"time"

	"proxyusage/internal/apperr"
)

// Event types (docs/api.md, "Usage events").
const (
	ConnectionStart = "connection_start"
	ConnectionEnd   = "connection_end"
	DataTransfer    = "data_transfer"
	ErrorEvent      = "error"
)

// Limits on event fields and batches.
const (
	MaxIDLength           = 128
	MaxErrorMessageLength = 1024
	MaxBatchEvents        = 10_000
	MaxBatchBytes         = 10 << 20
	MaxEventBytes         = 64 << 10
	// Bounds on one event's numbers. A larger value is a client bug or an
	// attack, not usage: 2^50 bytes is a pebibyte in one event. Sums of
	// them are exact at any size (see internal/exact).
	MaxBytes           = 1 << 50         // bytesSent, bytesReceived, dataBytes
	MaxDurationSeconds = 365 * 24 * 3600 // a year
	MaxLatencyMs       = 3600 * 1000     // an hour
)

// Event is a validated usage event, ready to store.
type Event struct {
	ProxyID       string
	Type          string
	EventID       string // empty: no idempotency key
	Time          time.Time
	ConnectionID  string
	BytesSent     int64
	BytesReceived int64
	DurationUS    int64 // valid when HasDuration
	HasDuration   bool
	LatencyUS     int64 // valid when HasLatency
	HasLatency    bool
	ErrorMessage  string
	IP            netip.Addr // zero: none
}

// Window bounds accepted event timestamps, measured from the server's now.
type Window struct {
	Late   time.Duration // oldest accepted age
	Future time.Duration // largest accepted clock skew ahead
}

// Check refuses timestamps outside the window, naming it.
func (w Window) Check(ts, now time.Time) error {
	if ts.After(now.Add(w.Future)) {
		return apperr.Errorf(apperr.Invalid, "timestamp is more than %s in the future", w.Future)
	}
	if ts.Before(now.Add(-w.Late)) {
		return apperr.Errorf(apperr.Invalid, "timestamp is older than the late-data window of %s", humanDuration(w.Late))
	}
	return nil
}

func humanDuration(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}
