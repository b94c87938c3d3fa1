package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
)

// CloudEvents ingest (structured mode, JSON format, spec 1.0): an event's
// type is "proxy.usage.<eventType>", its subject the proxyId, its time the
// timestamp and its data the eventData. (source, id) is the event's
// identity, so it becomes the idempotency key.
const (
	CloudEventsType      = "application/cloudevents+json"
	CloudEventsBatchType = "application/cloudevents-batch+json"
	cloudEventTypePrefix = "proxy.usage."
)

// cloudEvent holds the attributes the service reads. Names match exactly;
// any other name must be an extension attribute by the CloudEvents naming
// rule (lower-case ASCII letters and digits), which is ignored.
type cloudEvent struct {
	SpecVersion     wireString
	ID              wireString
	Source          wireString
	Type            wireString
	Subject         wireString
	Time            wireString
	DataContentType wireString
	Data            []byte // raw; nil when absent
	DataBase64      []byte
}

// decodeCloudEvent reads the CloudEvent value at the cursor.
func decodeCloudEvent(c *cursor) (cloudEvent, error) {
	var ce cloudEvent
	var fe fieldErrs
	if c.kind() != '{' {
		c.skip()
		return ce, invalid("not a structured CloudEvent in JSON")
	}
	c.object(func(raw []byte) {
		switch key := keyName(raw); string(key) {
		case "specversion":
			readString(c, &ce.SpecVersion, "specversion", &fe)
		case "id":
			readString(c, &ce.ID, "id", &fe)
		case "source":
			readString(c, &ce.Source, "source", &fe)
		case "type":
			readString(c, &ce.Type, "type", &fe)
		case "subject":
			readString(c, &ce.Subject, "subject", &fe)
		case "time":
			readString(c, &ce.Time, "time", &fe)
		case "datacontenttype":
			readString(c, &ce.DataContentType, "datacontenttype", &fe)
		case "data":
			ce.Data = c.skip()
		case "data_base64":
			ce.DataBase64 = c.skip()
		default: // dataschema and extensions
			c.skip()
			if !extensionName(key) {
				fe.unknownName("", key)
			}
		}
	})
	return ce, fe.err()
}

// extensionName reports whether name is a valid CloudEvents attribute name.
func extensionName(name []byte) bool {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return len(name) > 0
}

// cloudEventKey derives the idempotency key from (source, id): readable
// when it fits the eventId limit, a hash of both otherwise.
func cloudEventKey(source, id string) string {
	if k := source + "#" + id; utf8.RuneCountInString(k) <= ingest.MaxIDLength {
		return k
	}
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return "ce:" + hex.EncodeToString(sum[:])
}

// toNative maps one CloudEvent onto the native event shape.
func (ce *cloudEvent) toNative() (map[string]any, error) {
	switch {
	case !ce.SpecVersion.set || ce.SpecVersion.String() != "1.0":
		return nil, invalid("specversion must be \"1.0\"")
	case !ce.ID.set || len(ce.ID.raw) == 0:
		return nil, invalid("id is required")
	case !ce.Source.set || len(ce.Source.raw) == 0:
		return nil, invalid("source is required")
	case !ce.Type.set || !strings.HasPrefix(ce.Type.String(), cloudEventTypePrefix):
		return nil, invalid("type must be proxy.usage.<eventType>, e.g. proxy.usage.data_transfer")
	case !ce.Subject.set || len(ce.Subject.raw) == 0:
		return nil, invalid("subject (the proxyId) is required")
	case ce.DataContentType.set && !strings.HasPrefix(ce.DataContentType.String(), "application/json"):
		return nil, invalid("datacontenttype must be application/json")
	case ce.DataBase64 != nil:
		return nil, invalid("data_base64 is not supported; send data as JSON")
	}
	ev := map[string]any{
		"proxyId":   ce.Subject.String(),
		"eventType": strings.TrimPrefix(ce.Type.String(), cloudEventTypePrefix),
		"eventId":   cloudEventKey(ce.Source.String(), ce.ID.String()),
	}
	if ce.Time.set {
		ev["timestamp"] = ce.Time.String()
	}
	if len(ce.Data) > 0 && string(ce.Data) != "null" {
		if ce.Data[0] != '{' {
			return nil, invalid("data must be a JSON object (the eventData)")
		}
		ev["eventData"] = json.RawMessage(ce.Data)
	}
	return ev, nil
}

// DecodeCloudEvents decodes a structured CloudEvent or a batch of them into
// validated events, with the same body rules and, through the native
// decoder, the same event rules (and batch error indexes) as the native
// batch. sent is how many events the body held (0: unreadable).
func (d Decoder) DecodeCloudEvents(body []byte, batch bool) (events []ingest.Event, sent int, err error) {
	c, more, err := parseBody(body)
	if err != nil {
		return nil, 0, err
	}
	var raws [][]byte
	if batch {
		if c.kind() != '[' {
			return nil, 0, invalid("body must be a JSON array of CloudEvents")
		}
		c.array(func() { raws = append(raws, c.skip()) })
	} else {
		raws = [][]byte{c.skip()}
	}
	if more {
		return nil, 0, invalid(msgSingle)
	}
	if len(raws) == 0 {
		return nil, 0, apperr.Errorf(apperr.Invalid, "a batch holds 1 to %d events", ingest.MaxBatchEvents)
	}
	if len(raws) > ingest.MaxBatchEvents {
		return nil, len(raws), apperr.Errorf(apperr.TooLarge, "a batch holds at most %d events", ingest.MaxBatchEvents)
	}
	native := make([]map[string]any, len(raws))
	for i, raw := range raws {
		ce, err := decodeCloudEvent(&cursor{d: raw})
		if err == nil {
			native[i], err = ce.toNative()
		}
		if err != nil {
			if batch {
				return nil, len(raws), apperr.AtIndex(err, i)
			}
			return nil, 1, err
		}
	}
	// Validate through the native decoder so both formats follow one set
	// of rules. Events before a failing one are returned for authorisation.
	b, err := json.Marshal(map[string]any{"events": native})
	if err != nil {
		return nil, len(raws), invalid("event cannot be re-encoded")
	}
	events, _, err = d.DecodeBatch(b)
	if err != nil && !batch {
		return nil, 1, apperr.AtIndex(err, -1) // a single event has no index
	}
	return events, len(raws), err
}
