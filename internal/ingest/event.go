// Package ingest is the domain of recording usage events: the Event, its
// limits and late-data Window, who may write into a proxy (Authorize), and
// the Recorder that decodes a request's events, authorises them and hands
// them to storage, answering through the Service interface.
//
// The wire format and the storage are sub-packages that import this one,
// so the compiler keeps the layers apart: internal/ingest/wire turns
// request bodies (native JSON, CloudEvents) into Events, checked by the
// event rules here (Event.Validate), and internal/ingest/store writes them
// (the group-commit Writer, the row mapping, the rollup deltas, the
// idempotency keys and their pruner). The Recorder holds them by the
// Decoder and Store interfaces declared here; internal/app wires the
// implementations.
package ingest

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"proxyusage/internal/apperr"
)

// Event types (docs/api.md, "Usage events").
const (
	ConnectionStart = "connection_start"
	ConnectionEnd   = "connection_end"
	DataTransfer    = "data_transfer"
	ErrorEvent      = "error"
)

// IsConnectionEvent reports whether e opens or closes a connection: the
// events pairing reads (docs/metrics.md).
func (e *Event) IsConnectionEvent() bool {
	return e.Type == ConnectionStart || e.Type == ConnectionEnd
}

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

// Field names a field of an Event, in the order Validate checks them.
// Decoders use it to keep an event's first fault the same whoever finds
// it: a decoder that cannot read a field reports the rules of the fields
// before it first (CheckBefore).
type Field uint8

// The fields of an Event, in the order of their rules.
const (
	FieldType          Field = iota // eventType: one of the four types
	FieldEventID                    // eventId: "" (no key) or text of 1 to MaxIDLength characters
	FieldTime                       // timestamp: inside the Window
	FieldConnectionID               // connectionId: text as eventId; required for connection events
	FieldBytesSent                  // bytesSent: 0 to MaxBytes
	FieldBytesReceived              // bytesReceived: 0 to MaxBytes
	FieldDuration                   // durationSeconds: 0 to MaxDurationSeconds
	FieldLatency                    // latencyMs: 0 to MaxLatencyMs
	FieldErrorMessage               // errorMessage: text of 0 to MaxErrorMessageLength characters
	FieldIP                         // ipAddress: no rule of the domain; its syntax is the decoder's
	AllFields                       // CheckBefore(AllFields, ...) checks every rule
)

// Validate checks the domain rules of an event (docs/api.md, "Usage
// events") against the late-data window w at now, and returns the first
// broken one, in the order of Field, as an apperr.Invalid. The decoders
// only read syntax into the Event; the rules are here.
func (e Event) Validate(w Window, now time.Time) error {
	_, err := e.CheckBefore(AllFields, w, now)
	return err
}

// CheckBefore is Validate for decoders: it checks the rules of the fields
// before the field before only, in order, and names the field whose rule
// failed (AllFields: none did). It is on the hot path of ingest, so it is
// written out rather than looped.
func (e *Event) CheckBefore(before Field, w Window, now time.Time) (Field, error) {
	if before > FieldType {
		switch e.Type {
		case ConnectionStart, ConnectionEnd, DataTransfer, ErrorEvent:
		default:
			return FieldType, invalid("eventType must be one of connection_start, connection_end, data_transfer, error")
		}
	}
	if before > FieldEventID && e.EventID != "" {
		if err := checkText("eventId", e.EventID, 1, MaxIDLength); err != nil {
			return FieldEventID, err
		}
	}
	if before > FieldTime {
		if err := w.Check(e.Time, now); err != nil {
			return FieldTime, err
		}
	}
	if before > FieldConnectionID {
		if e.ConnectionID != "" {
			if err := checkText("eventData.connectionId", e.ConnectionID, 1, MaxIDLength); err != nil {
				return FieldConnectionID, err
			}
		} else if e.IsConnectionEvent() {
			return FieldConnectionID, invalid("eventData.connectionId is required for %s", e.Type)
		}
	}
	if before > FieldBytesSent && (e.BytesSent < 0 || e.BytesSent > MaxBytes) {
		return FieldBytesSent, countError("eventData.bytesSent")
	}
	if before > FieldBytesReceived && (e.BytesReceived < 0 || e.BytesReceived > MaxBytes) {
		return FieldBytesReceived, countError("eventData.bytesReceived")
	}
	if before > FieldDuration && e.HasDuration && (e.DurationUS < 0 || e.DurationUS > MaxDurationSeconds*1e6) {
		return FieldDuration, invalid("eventData.durationSeconds must be a number from 0 to %d", MaxDurationSeconds)
	}
	if before > FieldLatency && e.HasLatency && (e.LatencyUS < 0 || e.LatencyUS > MaxLatencyMs*1e3) {
		return FieldLatency, invalid("eventData.latencyMs must be a number from 0 to %d", MaxLatencyMs)
	}
	if before > FieldErrorMessage && e.ErrorMessage != "" {
		if err := checkText("eventData.errorMessage", e.ErrorMessage, 0, MaxErrorMessageLength); err != nil {
			return FieldErrorMessage, err
		}
	}
	return AllFields, nil
}

// checkText enforces a length in characters and text PostgreSQL can store.
func checkText(field, s string, min, max int) error {
	n := utf8.RuneCountInString(s)
	if n < min || n > max || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return invalid("%s must be text of %d to %d characters", field, min, max)
	}
	return nil
}

func countError(field string) error {
	return invalid("%s must be an integer from 0 to %d", field, MaxBytes)
}

func invalid(format string, args ...any) error {
	return apperr.Errorf(apperr.Invalid, format, args...)
}

// DurationMicros converts a durationSeconds as sent to the Event's whole
// microseconds, rounded. A value outside 0 to MaxDurationSeconds (NaN, an
// infinity) becomes one Validate refuses, so the rule holds for the value
// sent, not for its rounding (31536000.0000004 s is over the bound).
func DurationMicros(seconds float64) int64 { return micros(seconds, 1e6, MaxDurationSeconds) }

// LatencyMicros is DurationMicros for a latencyMs and MaxLatencyMs.
func LatencyMicros(ms float64) int64 { return micros(ms, 1e3, MaxLatencyMs) }

func micros(v, unit, max float64) int64 {
	switch {
	case v > max:
		return math.MaxInt64
	case v >= 0:
		return int64(math.Round(v * unit))
	}
	return -1 // negative or NaN
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
