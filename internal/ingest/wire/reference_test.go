package wire

// This file keeps a reflection-based decoder (internal/strictjson, which is
// encoding/json behind a token walk that enforces the body rules and exact
// member names) as the reference the fast decoder in decode.go and json.go
// is tested against: same events, same errors, same indexes (see
// decoder_test.go).

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
	"proxyusage/internal/proxy"
	"proxyusage/internal/strictjson"
)

// refWireEvent is the JSON shape of an event of the single-event endpoint
// (its proxy is in the path). Raw fields are parsed by hand so that numbers
// keep their exact text and types are strict.
type refWireEvent struct {
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

// refWireBatchEvent is an event of a batch: it names its proxy.
type refWireBatchEvent struct {
	ProxyID *string `json:"proxyId"`
	refWireEvent
}

type refWireBatch struct {
	Events []json.RawMessage `json:"events"`
}

// refDecoder turns request bodies into validated events.
type refDecoder struct {
	Window ingest.Window
	Now    func() time.Time
}

// DecodeOne decodes the body of the single-event endpoint for proxyID.
func (d refDecoder) DecodeOne(body []byte, proxyID string) (ingest.Event, error) {
	if err := proxy.ValidateID(proxyID); err != nil {
		return ingest.Event{}, apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	var w refWireEvent
	if err := strictjson.Decode(body, &w); err != nil {
		return ingest.Event{}, err
	}
	return d.validate(&w, proxyID, d.Now().UTC())
}

// DecodeBatch decodes a batch body. It returns the events that precede the
// first refInvalid one and that failure (with its index), so the caller can
// let a lower-index authorization failure win, and the number of events.
func (d refDecoder) DecodeBatch(body []byte) ([]ingest.Event, int, error) {
	var b refWireBatch
	if err := strictjson.Decode(body, &b); err != nil {
		return nil, 0, err
	}
	if len(b.Events) == 0 {
		return nil, 0, apperr.Errorf(apperr.Invalid, "events must hold 1 to %d events", ingest.MaxBatchEvents)
	}
	if len(b.Events) > ingest.MaxBatchEvents {
		return nil, len(b.Events), apperr.Errorf(apperr.TooLarge, "a batch holds at most %d events", ingest.MaxBatchEvents)
	}
	now := d.Now().UTC()
	events := make([]ingest.Event, 0, len(b.Events))
	for i, raw := range b.Events {
		var w refWireBatchEvent
		if err := strictjson.Decode(raw, &w); err != nil {
			return events, len(b.Events), apperr.AtIndex(err, i)
		}
		if w.ProxyID == nil {
			return events, len(b.Events), &apperr.Error{Code: apperr.Invalid, Message: "proxyId is required", Index: i}
		}
		if err := proxy.ValidateID(*w.ProxyID); err != nil {
			return events, len(b.Events), apperr.AtIndex(err, i)
		}
		e, err := d.validate(&w.refWireEvent, *w.ProxyID, now)
		if err != nil {
			return events, len(b.Events), apperr.AtIndex(err, i)
		}
		events = append(events, e)
	}
	return events, len(b.Events), nil
}

func refInvalid(format string, args ...any) error {
	return apperr.Errorf(apperr.Invalid, format, args...)
}

func (d refDecoder) validate(w *refWireEvent, proxyID string, now time.Time) (ingest.Event, error) {
	e := ingest.Event{ProxyID: proxyID}
	if w.EventType == nil {
		return e, refInvalid("eventType is required")
	}
	switch *w.EventType {
	case ingest.ConnectionStart, ingest.ConnectionEnd, ingest.DataTransfer, ingest.ErrorEvent:
		e.Type = *w.EventType
	default:
		return e, refInvalid("eventType must be one of connection_start, connection_end, data_transfer, error")
	}
	if w.EventID != nil {
		if err := refCheckText("eventId", *w.EventID, 1, ingest.MaxIDLength); err != nil {
			return e, err
		}
		e.EventID = *w.EventID
	}
	if w.Timestamp != nil {
		ts, err := refParseTimestamp(*w.Timestamp)
		if err != nil {
			return e, refInvalid("timestamp must be RFC 3339, e.g. 2026-01-02T15:04:05Z or 2026-01-02T17:04:05+02:00 (offset at most ±23:59)")
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
		if err := refCheckText("eventData.connectionId", *data.ConnectionID, 1, ingest.MaxIDLength); err != nil {
			return e, err
		}
		e.ConnectionID = *data.ConnectionID
	}
	if (e.Type == ingest.ConnectionStart || e.Type == ingest.ConnectionEnd) && e.ConnectionID == "" {
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
	if e.DurationUS, e.HasDuration, err = refParseMicros("eventData.durationSeconds", data.DurationSeconds, 1e6, 31_536_000); err != nil {
		return e, err
	}
	if e.LatencyUS, e.HasLatency, err = refParseMicros("eventData.latencyMs", data.LatencyMs, 1e3, 3_600_000); err != nil {
		return e, err
	}
	if data.ErrorMessage != nil {
		if err := refCheckText("eventData.errorMessage", *data.ErrorMessage, 0, ingest.MaxErrorMessageLength); err != nil {
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

// refParseCount parses a byte count written as a JSON integer from 0 to
// 2^50.
func refParseCount(field string, raw json.RawMessage) (int64, error) {
	if raw == nil || string(raw) == "null" {
		return 0, nil
	}
	const limit = 1_125_899_906_842_624
	if raw[0] == '-' || raw[0] < '0' || raw[0] > '9' {
		return 0, refInvalid("%s must be an integer from 0 to %d", field, limit)
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v > limit {
		return 0, refInvalid("%s must be an integer from 0 to %d", field, limit)
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
		return 0, false, refInvalid("%s must be a number from 0 to %s", field, strconv.FormatFloat(max, 'f', -1, 64))
	}
	return int64(math.Round(v * unit)), true, nil
}

// refTimestamp is RFC 3339's date-time with upper-case T and Z; time.Parse
// alone also takes a comma before the fraction.
var refTimestamp = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-](\d{2}):(\d{2}))$`)

// refParseTimestamp is time.Parse held to RFC 3339's grammar and offset
// range (time.Parse takes +24:00 and +00:60).
func refParseTimestamp(s string) (time.Time, error) {
	m := refTimestamp.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, errors.New("not RFC 3339")
	}
	if m[3] != "" {
		if h, _ := strconv.Atoi(m[3]); h > 23 {
			return time.Time{}, errors.New("offset hours out of range")
		}
		if mm, _ := strconv.Atoi(m[4]); mm > 59 {
			return time.Time{}, errors.New("offset minutes out of range")
		}
	}
	return time.Parse(time.RFC3339Nano, s)
}
