package ingest

// This file keeps the original reflection-based decoder (encoding/json plus
// a token walk for duplicate keys) as the reference the fast decoder in
// event.go and json.go is tested against: same events, same errors, same
// indexes (see decoder_test.go).

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/proxy"
)

// refWireEvent is the JSON shape of an event. Raw fields are parsed by hand so
// that numbers keep their exact text and types are strict.
type refWireEvent struct {
	ProxyID   *string      `json:"proxyId"`
	EventType *string      `json:"eventType"`
	EventID   *string      `json:"eventId"`
	Timestamp *string      `json:"timestamp"`
	EventData *refWireData `json:"eventData"`
}

type refWireData struct {
	ConnectionID    *string         `json:"connectionId"`
	BytesSent       json.RawMessage `json:"bytesSent"`
	BytesReceived   json.RawMessage `json:"bytesReceived"`
	DataBytes       json.RawMessage `json:"dataBytes"`
	DurationSeconds json.RawMessage `json:"durationSeconds"`
	LatencyMs       json.RawMessage `json:"latencyMs"`
	ErrorMessage    *string         `json:"errorMessage"`
	IPAddress       *string         `json:"ipAddress"`
}

type refWireBatch struct {
	Events []json.RawMessage `json:"events"`
}

// refDecoder turns request bodies into validated events.
type refDecoder struct {
	Window Window
	Now    func() time.Time
}

// DecodeOne decodes the body of the single-event endpoint for proxyID.
func (d refDecoder) DecodeOne(body []byte, proxyID string) (Event, error) {
	if err := proxy.ValidateID(proxyID); err != nil {
		return Event{}, apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	var w refWireEvent
	if err := refStrictUnmarshal(body, &w, true); err != nil {
		return Event{}, err
	}
	w.ProxyID = &proxyID
	return d.validate(&w, d.Now().UTC())
}

// DecodeBatch decodes a batch body. It returns the events that precede the
// first refInvalid one and that failure (with its index), so the caller can
// let a lower-index authorization failure win.
func (d refDecoder) DecodeBatch(body []byte) ([]Event, error) {
	var b refWireBatch
	if err := refStrictUnmarshal(body, &b, true); err != nil {
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
		var w refWireEvent
		// Keys were checked with the whole body.
		if err := refStrictUnmarshal(raw, &w, false); err != nil {
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

func refInvalid(format string, args ...any) error {
	return apperr.Errorf(apperr.Invalid, format, args...)
}

func (d refDecoder) validate(w *refWireEvent, now time.Time) (Event, error) {
	e := Event{ProxyID: *w.ProxyID}
	if w.EventType == nil {
		return e, refInvalid("eventType is required")
	}
	switch *w.EventType {
	case ConnectionStart, ConnectionEnd, DataTransfer, ErrorEvent:
		e.Type = *w.EventType
	default:
		return e, refInvalid("eventType must be one of connection_start, connection_end, data_transfer, error")
	}
	if w.EventID != nil {
		if err := refCheckText("eventId", *w.EventID, 1, MaxIDLength); err != nil {
			return e, err
		}
		e.EventID = *w.EventID
	}
	if w.Timestamp != nil {
		ts, err := time.Parse(time.RFC3339Nano, *w.Timestamp)
		if err != nil {
			return e, refInvalid("timestamp must be RFC 3339, e.g. 2026-01-02T15:04:05Z")
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
		data = &refWireData{}
	}
	if data.ConnectionID != nil {
		if err := refCheckText("eventData.connectionId", *data.ConnectionID, 1, MaxIDLength); err != nil {
			return e, err
		}
		e.ConnectionID = *data.ConnectionID
	}
	if (e.Type == ConnectionStart || e.Type == ConnectionEnd) && e.ConnectionID == "" {
		return e, refInvalid("eventData.connectionId is required for %s", e.Type)
	}
	var err error
	if data.BytesSent != nil && data.DataBytes != nil {
		return e, refInvalid("eventData.bytesSent and eventData.dataBytes are aliases; send one")
	}
	sent := data.BytesSent
	name := "eventData.bytesSent"
	if data.DataBytes != nil {
		sent, name = data.DataBytes, "eventData.dataBytes"
	}
	if e.BytesSent, err = refParseCount(name, sent); err != nil {
		return e, err
	}
	if e.BytesReceived, err = refParseCount("eventData.bytesReceived", data.BytesReceived); err != nil {
		return e, err
	}
	if e.DurationUS, e.HasDuration, err = refParseMicros("eventData.durationSeconds", data.DurationSeconds, 1e6, MaxDurationSeconds); err != nil {
		return e, err
	}
	if e.LatencyUS, e.HasLatency, err = refParseMicros("eventData.latencyMs", data.LatencyMs, 1e3, MaxLatencyMs); err != nil {
		return e, err
	}
	if data.ErrorMessage != nil {
		if err := refCheckText("eventData.errorMessage", *data.ErrorMessage, 0, MaxErrorMessageLength); err != nil {
			return e, err
		}
		e.ErrorMessage = *data.ErrorMessage
	}
	if data.IPAddress != nil {
		ip, err := netip.ParseAddr(*data.IPAddress)
		if err != nil || ip.Zone() != "" {
			return e, refInvalid("eventData.ipAddress must be an IPv4 or IPv6 address")
		}
		e.IP = ip.Unmap()
	}
	return e, nil
}

// refCheckText enforces a length in characters and text PostgreSQL can store.
func refCheckText(field, s string, min, max int) error {
	n := utf8.RuneCountInString(s)
	if n < min || n > max || !utf8.ValidString(s) || bytes.IndexByte([]byte(s), 0) >= 0 {
		return refInvalid("%s must be text of %d to %d characters", field, min, max)
	}
	return nil
}

// refParseCount parses a non-negative int64 written as a JSON integer.
func refParseCount(field string, raw json.RawMessage) (int64, error) {
	if raw == nil || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '-' || raw[0] < '0' || raw[0] > '9' {
		return 0, refInvalid("%s must be a non-negative integer", field)
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, refInvalid("%s must be a non-negative integer of at most %d", field, int64(math.MaxInt64))
	}
	return v, nil
}

// refParseMicros parses a non-negative JSON number of units and converts it
// to integer microseconds (unit = microseconds per unit).
func refParseMicros(field string, raw json.RawMessage, unit, max float64) (int64, bool, error) {
	if raw == nil || string(raw) == "null" {
		return 0, false, nil
	}
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false, refInvalid("%s must be a number", field)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		return 0, false, refInvalid("%s must be a number from 0 to %g", field, max)
	}
	return int64(math.Round(v * unit)), true, nil
}

// refStrictUnmarshal decodes one JSON value, refusing trailing data and
// duplicate keys (which decoders resolve differently, so a signed or
// audited body could mean two things).
func refStrictUnmarshal(data []byte, v any, checkKeys bool) error {
	if checkKeys {
		// encoding/json would silently replace refInvalid UTF-8 with U+FFFD.
		if !utf8.Valid(data) {
			return refInvalid("body must be UTF-8 encoded JSON")
		}
		if err := refCheckNoDuplicateKeys(data); err != nil {
			return err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return refInvalid("%s has the wrong type", typeErr.Field)
		}
		return refInvalid("body must be a JSON object of the documented shape")
	}
	if _, err := dec.Token(); err != io.EOF {
		return refInvalid("body must hold a single JSON value")
	}
	return nil
}

// refCheckNoDuplicateKeys walks the JSON tokens and refuses an object that
// repeats a key.
func refCheckNoDuplicateKeys(data []byte) error {
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
			return refInvalid("body is not valid JSON")
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if key, ok := tok.(string); ok {
				if _, dup := top.keys[key]; dup {
					return refInvalid("duplicate key %q", refTruncate(key, 64))
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

func refTruncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
