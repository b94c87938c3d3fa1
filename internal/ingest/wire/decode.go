// Package wire is the wire format of ingest: it reads request bodies —
// the native JSON event and batch (json.go, a scanner without reflection)
// and CloudEvents (cloudevents.go) — into ingest.Events by the strict JSON
// rules, and has each checked by the event rules of docs/api.md, which
// live in the domain (ingest.Event.Validate). Its own part is syntax: the
// JSON shape, number and timestamp syntax, the bytesSent/dataBytes alias,
// text into typed fields. It implements ingest.Decoder and knows nothing
// of storage.
package wire

import (
	"errors"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
	"proxyusage/internal/proxy"
	"proxyusage/internal/strictjson"
)

// wireString is a JSON string field: set when present and not null, raw
// its undecoded content.
type wireString struct {
	set bool
	raw []byte
}

func (s wireString) String() string { return unquote(s.raw) }

// wireEvent is the JSON shape of an event. Numeric fields keep their raw
// text (nil: absent; "null" counts as present), so numbers are parsed
// exactly and types are strict.
type wireEvent struct {
	ProxyID   wireString
	EventType wireString
	EventID   wireString
	Timestamp wireString
	HasData   bool
	Data      wireData
}

type wireData struct {
	ConnectionID    wireString
	BytesSent       []byte
	BytesReceived   []byte
	DataBytes       []byte
	DurationSeconds []byte
	LatencyMs       []byte
	ErrorMessage    wireString
	IPAddress       wireString
}

// fieldErrs remembers what decoding a value found wrong with its fields:
// the first unknown name, which wins, else the first field of the wrong
// JSON type.
type fieldErrs struct {
	unknown   error
	typeSet   bool
	typeField string // "" for the value itself
}

func (f *fieldErrs) add(field string) {
	if !f.typeSet {
		f.typeSet, f.typeField = true, field
	}
}

// unknownName records a member name the shape does not have.
func (f *fieldErrs) unknownName(prefix string, key []byte) {
	if f.unknown == nil {
		f.unknown = strictjson.Unknown(prefix + string(key))
	}
}

func (f *fieldErrs) err() error {
	switch {
	case f.unknown != nil:
		return f.unknown
	case !f.typeSet:
		return nil
	case f.typeField == "":
		return invalid(msgShape)
	}
	return strictjson.WrongType(f.typeField)
}

func readString(c *cursor, dst *wireString, field string, fe *fieldErrs) {
	switch c.kind() {
	case '"':
		*dst = wireString{set: true, raw: c.str()}
	case 'n':
		c.i += 4
		*dst = wireString{}
	default:
		c.skip()
		fe.add(field)
	}
}

// decodeEvent reads the event value at the cursor into w; withProxy: the
// event names its proxyId (a batch event; the single endpoint takes it
// from the path).
func decodeEvent(c *cursor, w *wireEvent, withProxy bool) error {
	var fe fieldErrs
	if c.kind() != '{' {
		c.skip()
		fe.add("")
		return fe.err()
	}
	c.object(func(raw []byte) {
		switch key := keyName(raw); string(key) {
		case "proxyId":
			if !withProxy {
				c.skip()
				fe.unknownName("", key)
				return
			}
			readString(c, &w.ProxyID, "proxyId", &fe)
		case "eventType":
			readString(c, &w.EventType, "eventType", &fe)
		case "eventId":
			readString(c, &w.EventID, "eventId", &fe)
		case "timestamp":
			readString(c, &w.Timestamp, "timestamp", &fe)
		case "eventData":
			switch c.kind() {
			case 'n':
				c.i += 4
				w.HasData, w.Data = false, wireData{}
			case '{':
				w.HasData, w.Data = true, wireData{}
				decodeData(c, &w.Data, &fe)
			default:
				c.skip()
				fe.add("eventData")
			}
		default:
			c.skip()
			fe.unknownName("", key)
		}
	})
	return fe.err()
}

func decodeData(c *cursor, d *wireData, fe *fieldErrs) {
	c.object(func(raw []byte) {
		switch key := keyName(raw); string(key) {
		case "connectionId":
			readString(c, &d.ConnectionID, "eventData.connectionId", fe)
		case "bytesSent":
			d.BytesSent = c.skip()
		case "bytesReceived":
			d.BytesReceived = c.skip()
		case "dataBytes":
			d.DataBytes = c.skip()
		case "durationSeconds":
			d.DurationSeconds = c.skip()
		case "latencyMs":
			d.LatencyMs = c.skip()
		case "errorMessage":
			readString(c, &d.ErrorMessage, "eventData.errorMessage", fe)
		case "ipAddress":
			readString(c, &d.IPAddress, "eventData.ipAddress", fe)
		default:
			c.skip()
			fe.unknownName("eventData.", key)
		}
	})
}

// decodeEnvelope reads a batch body's value: the raw events.
func decodeEnvelope(c *cursor) ([][]byte, error) {
	var fe fieldErrs
	var events [][]byte
	if c.kind() != '{' {
		c.skip()
		fe.add("")
		return nil, fe.err()
	}
	c.object(func(raw []byte) {
		key := keyName(raw)
		if string(key) != "events" {
			c.skip()
			fe.unknownName("", key)
			return
		}
		switch c.kind() {
		case '[':
			events = events[:0]
			c.array(func() { events = append(events, c.skip()) })
		case 'n':
			c.i += 4
			events = nil
		default:
			c.skip()
			fe.add("events")
		}
	})
	return events, fe.err()
}

// parseBody checks a whole body and returns a cursor on its single value.
func parseBody(body []byte) (cursor, bool, error) {
	// encoding/json would silently replace invalid UTF-8 with U+FFFD.
	if !utf8.Valid(body) {
		return cursor{}, false, invalid(strictjson.MsgNotUTF8)
	}
	first, more, depth, err := scanBody(body)
	if err != nil {
		return cursor{}, false, err
	}
	if first == nil || depth > maxNestingDepth {
		return cursor{}, false, invalid(msgShape)
	}
	return cursor{d: first}, more, nil
}

// Decoder turns request bodies into validated events.
type Decoder struct {
	Window ingest.Window
	Now    func() time.Time
}

var _ ingest.Decoder = Decoder{}

// NewDecoder returns the Decoder of the service: events within window of
// the clock's now.
func NewDecoder(window ingest.Window) (Decoder, error) {
	if window.Late <= 0 || window.Future <= 0 {
		return Decoder{}, errors.New("ingest: Window must be positive")
	}
	return Decoder{Window: window, Now: time.Now}, nil
}

// DecodeOne decodes the body of the single-event endpoint for proxyID.
func (d Decoder) DecodeOne(body []byte, proxyID string) (ingest.Event, error) {
	if !validProxyID(proxyID) {
		return ingest.Event{}, apperr.Errorf(apperr.NotFound, "proxy not found")
	}
	c, more, err := parseBody(body)
	if err != nil {
		return ingest.Event{}, err
	}
	var w wireEvent
	if err := decodeEvent(&c, &w, false); err != nil {
		return ingest.Event{}, err
	}
	if more {
		return ingest.Event{}, invalid(msgSingle)
	}
	return d.validate(&w, proxyID, d.Now().UTC())
}

// DecodeBatch decodes a batch body. It returns the events that precede the
// first invalid one and that failure (with its index), so the caller can
// let a lower-index authorization failure win, and how many events the
// body held (0 when it could not be read as a batch).
func (d Decoder) DecodeBatch(body []byte) (events []ingest.Event, sent int, err error) {
	c, more, err := parseBody(body)
	if err != nil {
		return nil, 0, err
	}
	raws, err := decodeEnvelope(&c)
	if err != nil {
		return nil, 0, err
	}
	if more {
		return nil, 0, invalid(msgSingle)
	}
	if len(raws) == 0 {
		return nil, 0, apperr.Errorf(apperr.Invalid, "events must hold 1 to %d events", ingest.MaxBatchEvents)
	}
	if len(raws) > ingest.MaxBatchEvents {
		return nil, len(raws), apperr.Errorf(apperr.TooLarge, "a batch holds at most %d events", ingest.MaxBatchEvents)
	}
	now := d.Now().UTC()
	events = make([]ingest.Event, 0, len(raws))
	// Proxy ids repeat across a batch: decode and check each once.
	ids := make(map[string]string, 64)
	for i, raw := range raws {
		var w wireEvent
		ec := cursor{d: raw}
		if err := decodeEvent(&ec, &w, true); err != nil {
			return events, len(raws), apperr.AtIndex(err, i)
		}
		if !w.ProxyID.set {
			return events, len(raws), &apperr.Error{Code: apperr.Invalid, Message: "proxyId is required", Index: i}
		}
		id, ok := ids[string(w.ProxyID.raw)]
		if !ok {
			id = w.ProxyID.String()
			if !validProxyID(id) {
				return events, len(raws), apperr.AtIndex(proxy.ValidateID(id), i)
			}
			ids[string(w.ProxyID.raw)] = id
		}
		e, err := d.validate(&w, id, now)
		if err != nil {
			return events, len(raws), apperr.AtIndex(err, i)
		}
		events = append(events, e)
	}
	return events, len(raws), nil
}

// validProxyID is proxy.ValidateID without the regexp: 1-128 characters
// of [A-Za-z0-9._:-], and not the dot-segments "." and "..".
func validProxyID(id string) bool {
	if len(id) == 0 || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func invalid(format string, args ...any) error {
	return apperr.Errorf(apperr.Invalid, format, args...)
}

// eventType returns the canonical constant for a raw type name, "" for a
// name that is none (Validate refuses it).
func eventType(s wireString) string {
	v := string(s.raw)
	if needsUnquote(s.raw) {
		v = s.String()
	}
	switch v {
	case ingest.ConnectionStart:
		return ingest.ConnectionStart
	case ingest.ConnectionEnd:
		return ingest.ConnectionEnd
	case ingest.DataTransfer:
		return ingest.DataTransfer
	case ingest.ErrorEvent:
		return ingest.ErrorEvent
	}
	return ""
}

// validate turns a decoded event into an ingest.Event and checks it: the
// syntax here, the domain rules by ingest.Event.CheckBefore. An event's
// first fault, in the order of ingest.Field, is the one reported, whether
// it is one of syntax (a field that cannot be read) or of the domain. The
// Event is returned only when valid.
func (d Decoder) validate(w *wireEvent, proxyID string, now time.Time) (ingest.Event, error) {
	var e ingest.Event
	if !w.EventType.set {
		return e, invalid("eventType is required")
	}
	at, err := read(w, &e, proxyID, now)
	f, verr := e.CheckBefore(at, d.Window, now)
	if verr != nil {
		if f == ingest.FieldBytesSent && w.Data.DataBytes != nil && w.HasData {
			// The rule names the field as the client sent it.
			verr = invalid("%s", strings.Replace(apperr.MessageOf(verr), "eventData.bytesSent", "eventData.dataBytes", 1))
		}
		return ingest.Event{}, verr
	}
	if err != nil {
		return ingest.Event{}, err
	}
	return e, nil
}

// read reads the fields of w into e, in the order of ingest.Field, up to
// the first that cannot be read: it returns that field and its syntax
// error, or ingest.AllFields and nil. It checks no domain rule: values out
// of their bounds are kept, or saturated, for Validate to refuse.
func read(w *wireEvent, e *ingest.Event, proxyID string, now time.Time) (ingest.Field, error) {
	e.ProxyID = proxyID
	e.Type = eventType(w.EventType)
	if w.EventID.set {
		// "" is no key in an Event; sent, it is a key too short.
		if len(w.EventID.raw) == 0 {
			return ingest.FieldEventID, emptyText("eventId")
		}
		e.EventID = w.EventID.String()
	}
	if w.Timestamp.set {
		ts, ok := parseTimestamp(w.Timestamp)
		if !ok {
			return ingest.FieldTime, invalid("timestamp must be RFC 3339, e.g. 2026-01-02T15:04:05Z or 2026-01-02T17:04:05+02:00 (offset at most ±23:59)")
		}
		e.Time = ts.UTC().Truncate(time.Microsecond)
	} else {
		e.Time = now.Truncate(time.Microsecond)
	}
	if !w.HasData {
		return ingest.AllFields, nil
	}
	data := &w.Data
	if data.ConnectionID.set {
		if len(data.ConnectionID.raw) == 0 {
			return ingest.FieldConnectionID, emptyText("eventData.connectionId")
		}
		e.ConnectionID = data.ConnectionID.String()
	}
	if data.BytesSent != nil && data.DataBytes != nil {
		return ingest.FieldBytesSent, invalid("eventData.bytesSent and eventData.dataBytes are aliases; send one")
	}
	sent := data.BytesSent
	name := "eventData.bytesSent"
	if data.DataBytes != nil {
		sent, name = data.DataBytes, "eventData.dataBytes"
	}
	var err error
	if e.BytesSent, err = parseCount(name, sent); err != nil {
		return ingest.FieldBytesSent, err
	}
	if e.BytesReceived, err = parseCount("eventData.bytesReceived", data.BytesReceived); err != nil {
		return ingest.FieldBytesReceived, err
	}
	var v float64
	if v, e.HasDuration, err = parseNumber("eventData.durationSeconds", data.DurationSeconds); err != nil {
		return ingest.FieldDuration, err
	} else if e.HasDuration {
		e.DurationUS = ingest.DurationMicros(v)
	}
	if v, e.HasLatency, err = parseNumber("eventData.latencyMs", data.LatencyMs); err != nil {
		return ingest.FieldLatency, err
	} else if e.HasLatency {
		e.LatencyUS = ingest.LatencyMicros(v)
	}
	if data.ErrorMessage.set {
		e.ErrorMessage = data.ErrorMessage.String()
	}
	if data.IPAddress.set {
		ip, err := netip.ParseAddr(data.IPAddress.String())
		if err != nil || ip.Zone() != "" {
			return ingest.FieldIP, invalid("eventData.ipAddress must be an IPv4 or IPv6 address")
		}
		e.IP = ip.Unmap()
	}
	return ingest.AllFields, nil
}

// parseTimestamp parses an RFC 3339 timestamp strictly (parseRFC3339).
func parseTimestamp(s wireString) (time.Time, bool) {
	if needsUnquote(s.raw) {
		return parseRFC3339([]byte(s.String()))
	}
	return parseRFC3339(s.raw)
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parseRFC3339 reads an RFC 3339 date-time, YYYY-MM-DDTHH:MM:SS, an
// optional fraction ("." and digits; past nanoseconds truncated), then "Z"
// or an offset ±HH:MM, with every field in range: a real calendar day,
// hour ≤ 23, minute and second ≤ 59, offset hours ≤ 23 and minutes ≤ 59.
// time.Parse is looser (offsets +24:00 and +00:60, a comma before the
// fraction), so it is not used. "T" and "Z" must be upper case, which
// RFC 3339 lets a format require. ok is false for anything else.
func parseRFC3339(b []byte) (t time.Time, ok bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, false
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	rest := b[19:]
	ns := 0
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			if n <= 9 {
				ns = ns*10 + int(rest[n]-'0')
			}
			n++
		}
		if n == 1 {
			return time.Time{}, false
		}
		for range 10 - min(n, 10) {
			ns *= 10
		}
		rest = rest[n:]
	}
	offset := 0
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, okh := digits(rest[1:3])
		om, okm := digits(rest[4:6])
		if !okh || !okm || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t = time.Date(year, time.Month(month), day, hour, minute, sec, ns, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), true
}

func daysIn(m time.Month, year int) int {
	if m == time.February {
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 31 - int((m-1)%7%2)
}

// emptyText refuses an empty identifier that was sent, with the words of
// the domain's rule for it (ingest.Event.Validate).
func emptyText(field string) error {
	return invalid("%s must be text of 1 to %d characters", field, ingest.MaxIDLength)
}

// parseCount reads a byte count written as a JSON integer; anything else
// is refused with the words of the domain's rule for it. A negative
// integer (-0 too) reads as -1 and one past int64 saturates, for Validate
// to refuse.
func parseCount(field string, raw []byte) (int64, error) {
	if raw == nil || string(raw) == "null" {
		return 0, nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	switch {
	case err == nil && raw[0] != '-':
		return v, nil
	case err == nil || errors.Is(err, strconv.ErrRange):
		if raw[0] == '-' {
			return -1, nil
		}
		return math.MaxInt64, nil
	}
	return 0, invalid("%s must be an integer from 0 to %d", field, ingest.MaxBytes)
}

// parseNumber reads a JSON number (ok: present and not null). One beyond
// float64 reads as an infinity, which the domain's conversion refuses.
func parseNumber(field string, raw []byte) (v float64, ok bool, err error) {
	if raw == nil || string(raw) == "null" {
		return 0, false, nil
	}
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false, invalid("%s must be a number", field)
	}
	// The scanner has checked the JSON syntax, so the only error left is
	// ErrRange, with ±Inf.
	v, _ = strconv.ParseFloat(string(raw), 64)
	return v, true, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
