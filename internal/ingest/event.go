// Package ingest validates, deduplicates and durably writes usage events.
// Events from many concurrent requests are written together by a
// group-commit Writer; a request is acknowledged only after its commit.
package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/proxy"
)

// Event types (SPEC §3).
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
	// Bounds that keep microsecond sums far from overflow.
	MaxDurationSeconds = 10 * 366 * 24 * 3600 // ten years
	MaxLatencyMs       = 24 * 3600 * 1000     // one day
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

// wireEvent is the JSON shape of an event. Raw fields are parsed by hand so
// that numbers keep their exact text and types are strict.
type wireEvent struct {
	ProxyID   *string   `json:"proxyId"`
	EventType *string   `json:"eventType"`
	EventID   *string   `json:"eventId"`
	Timestamp *string   `json:"timestamp"`
	EventData *wireData `json:"eventData"`
}

type wireData struct {
	ConnectionID    *string         `json:"connectionId"`
	BytesSent       json.RawMessage `json:"bytesSent"`
	BytesReceived   json.RawMessage `json:"bytesReceived"`
	DataBytes       json.RawMessage `json:"dataBytes"`
	DurationSeconds json.RawMessage `json:"durationSeconds"`
	LatencyMs       json.RawMessage `json:"latencyMs"`
	ErrorMessage    *string         `json:"errorMessage"`
	IPAddress       *string         `json:"ipAddress"`
}

type wireBatch struct {
	Events []json.RawMessage `json:"events"`
}

// Decoder turns request bodies into validated events.
type Decoder struct {
	Window Window
	Now    func() time.Time
}

// DecodeOne decodes the body of the single-event endpoint for proxyID.
func (d Decoder) DecodeOne(body []byte, proxyID string) (Event, error) {
	if err := proxy.ValidateID(proxyID); err != nil {
		return Event{}, apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	var w wireEvent
	if err := strictUnmarshal(body, &w, true); err != nil {
		return Event{}, err
	}
	w.ProxyID = &proxyID
	return d.validate(&w, d.Now().UTC())
}

// DecodeBatch decodes a batch body. It returns the events that precede the
// first invalid one and that failure (with its index), so the caller can
// let a lower-index authorization failure win.
func (d Decoder) DecodeBatch(body []byte) ([]Event, error) {
	var b wireBatch
	if err := strictUnmarshal(body, &b, true); err != nil {
		return nil, err
	}
	if len(b.Events) == 0 {
		return nil, apperr.Errorf(apperr.Invalid, "events must hold 1 to %d events", MaxBatchEvents)
	}
	if len(b.Events) > MaxBatchEvents {
		return nil, apperr.Errorf(apperr.TooLarge, "a batch holds at most %d events", MaxBatchEvents)
	}
	now := d.Now().UTC()
	events := make([]Event, 0, len(b.Events))
	for i, raw := range b.Events {
		var w wireEvent
		// Keys were checked with the whole body.
		if err := strictUnmarshal(raw, &w, false); err != nil {
			return events, apperr.AtIndex(err, i)
		}
		if w.ProxyID == nil {
			return events, &apperr.Error{Code: apperr.Invalid, Message: "proxyId is required", Index: i}
		}
		if err := proxy.ValidateID(*w.ProxyID); err != nil {
			return events, apperr.AtIndex(err, i)
		}
		e, err := d.validate(&w, now)
		if err != nil {
			return events, apperr.AtIndex(err, i)
		}
		events = append(events, e)
	}
	return events, nil
}

func invalid(format string, args ...any) error {
	return apperr.Errorf(apperr.Invalid, format, args...)
}

func (d Decoder) validate(w *wireEvent, now time.Time) (Event, error) {
	e := Event{ProxyID: *w.ProxyID}
	if w.EventType == nil {
		return e, invalid("eventType is required")
	}
	switch *w.EventType {
	case ConnectionStart, ConnectionEnd, DataTransfer, ErrorEvent:
		e.Type = *w.EventType
	default:
		return e, invalid("eventType must be one of connection_start, connection_end, data_transfer, error")
	}
	if w.EventID != nil {
		if err := checkText("eventId", *w.EventID, 1, MaxIDLength); err != nil {
			return e, err
		}
		e.EventID = *w.EventID
	}
	if w.Timestamp != nil {
		ts, err := time.Parse(time.RFC3339Nano, *w.Timestamp)
		if err != nil {
			return e, invalid("timestamp must be RFC 3339, e.g. 2026-01-02T15:04:05Z")
		}
		e.Time = ts.UTC().Truncate(time.Microsecond)
		if err := d.Window.Check(e.Time, now); err != nil {
			return e, err
		}
	} else {
		e.Time = now.Truncate(time.Microsecond)
	}
	data := w.EventData
	if data == nil {
		data = &wireData{}
	}
	if data.ConnectionID != nil {
		if err := checkText("eventData.connectionId", *data.ConnectionID, 1, MaxIDLength); err != nil {
			return e, err
		}
		e.ConnectionID = *data.ConnectionID
	}
	if (e.Type == ConnectionStart || e.Type == ConnectionEnd) && e.ConnectionID == "" {
		return e, invalid("eventData.connectionId is required for %s", e.Type)
	}
	var err error
	if data.BytesSent != nil && data.DataBytes != nil {
		return e, invalid("eventData.bytesSent and eventData.dataBytes are aliases; send one")
	}
	sent := data.BytesSent
	name := "eventData.bytesSent"
	if data.DataBytes != nil {
		sent, name = data.DataBytes, "eventData.dataBytes"
	}
	if e.BytesSent, err = parseCount(name, sent); err != nil {
		return e, err
	}
	if e.BytesReceived, err = parseCount("eventData.bytesReceived", data.BytesReceived); err != nil {
		return e, err
	}
	if e.DurationUS, e.HasDuration, err = parseMicros("eventData.durationSeconds", data.DurationSeconds, 1e6, MaxDurationSeconds); err != nil {
		return e, err
	}
	if e.LatencyUS, e.HasLatency, err = parseMicros("eventData.latencyMs", data.LatencyMs, 1e3, MaxLatencyMs); err != nil {
		return e, err
	}
	if data.ErrorMessage != nil {
		if err := checkText("eventData.errorMessage", *data.ErrorMessage, 0, MaxErrorMessageLength); err != nil {
			return e, err
		}
		e.ErrorMessage = *data.ErrorMessage
	}
	if data.IPAddress != nil {
		ip, err := netip.ParseAddr(*data.IPAddress)
		if err != nil || ip.Zone() != "" {
			return e, invalid("eventData.ipAddress must be an IPv4 or IPv6 address")
		}
		e.IP = ip.Unmap()
	}
	return e, nil
}

// checkText enforces a length in characters and text PostgreSQL can store.
func checkText(field, s string, min, max int) error {
	n := utf8.RuneCountInString(s)
	if n < min || n > max || !utf8.ValidString(s) || bytes.IndexByte([]byte(s), 0) >= 0 {
		return invalid("%s must be text of %d to %d characters", field, min, max)
	}
	return nil
}

// parseCount parses a non-negative int64 written as a JSON integer.
func parseCount(field string, raw json.RawMessage) (int64, error) {
	if raw == nil || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '-' || raw[0] < '0' || raw[0] > '9' {
		return 0, invalid("%s must be a non-negative integer", field)
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, invalid("%s must be a non-negative integer of at most %d", field, int64(math.MaxInt64))
	}
	return v, nil
}

// parseMicros parses a non-negative JSON number of units and converts it
// to integer microseconds (unit = microseconds per unit).
func parseMicros(field string, raw json.RawMessage, unit, max float64) (int64, bool, error) {
	if raw == nil || string(raw) == "null" {
		return 0, false, nil
	}
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false, invalid("%s must be a number", field)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		return 0, false, invalid("%s must be a number from 0 to %g", field, max)
	}
	return int64(math.Round(v * unit)), true, nil
}

// strictUnmarshal decodes one JSON value, refusing trailing data and
// duplicate keys (which decoders resolve differently, so a signed or
// audited body could mean two things).
func strictUnmarshal(data []byte, v any, checkKeys bool) error {
	if checkKeys {
		// encoding/json would silently replace invalid UTF-8 with U+FFFD.
		if !utf8.Valid(data) {
			return invalid("body must be UTF-8 encoded JSON")
		}
		if err := checkNoDuplicateKeys(data); err != nil {
			return err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return invalid("%s has the wrong type", typeErr.Field)
		}
		return invalid("body must be a JSON object of the documented shape")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("body must hold a single JSON value")
	}
	return nil
}

// checkNoDuplicateKeys walks the JSON tokens and refuses an object that
// repeats a key.
func checkNoDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]struct{}
		expect bool // next string token in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return invalid("body is not valid JSON")
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if key, ok := tok.(string); ok {
				if _, dup := top.keys[key]; dup {
					return invalid("duplicate key %q", truncate(key, 64))
				}
				top.keys[key] = struct{}{}
				top.expect = false
				continue
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{object: true, keys: map[string]struct{}{}, expect: true})
				continue
			case '[':
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
			}
		}
		// A value finished: the enclosing object now expects a key.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
