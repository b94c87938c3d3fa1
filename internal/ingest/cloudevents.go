package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"unicode/utf8"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
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

type cloudEvent struct {
	SpecVersion     *string         `json:"specversion"`
	ID              *string         `json:"id"`
	Source          *string         `json:"source"`
	Type            *string         `json:"type"`
	Subject         *string         `json:"subject"`
	Time            *string         `json:"time"`
	DataContentType *string         `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	DataBase64      json.RawMessage `json:"data_base64"`
}

// cloudEventKey derives the idempotency key from (source, id): readable
// when it fits the eventId limit, a hash of both otherwise.
func cloudEventKey(source, id string) string {
	if k := source + "#" + id; utf8.RuneCountInString(k) <= MaxIDLength {
		return k
	}
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return "ce:" + hex.EncodeToString(sum[:])
}

// toNative maps one CloudEvent onto the native event shape.
func (ce *cloudEvent) toNative() (map[string]any, error) {
	switch {
	case ce.SpecVersion == nil || *ce.SpecVersion != "1.0":
		return nil, invalid("specversion must be \"1.0\"")
	case ce.ID == nil || *ce.ID == "":
		return nil, invalid("id is required")
	case ce.Source == nil || *ce.Source == "":
		return nil, invalid("source is required")
	case ce.Type == nil || !strings.HasPrefix(*ce.Type, cloudEventTypePrefix):
		return nil, invalid("type must be proxy.usage.<eventType>, e.g. proxy.usage.data_transfer")
	case ce.Subject == nil || *ce.Subject == "":
		return nil, invalid("subject (the proxyId) is required")
	case ce.DataContentType != nil && !strings.HasPrefix(*ce.DataContentType, "application/json"):
		return nil, invalid("datacontenttype must be application/json")
	case ce.DataBase64 != nil:
		return nil, invalid("data_base64 is not supported; send data as JSON")
	}
	ev := map[string]any{
		"proxyId":   *ce.Subject,
		"eventType": strings.TrimPrefix(*ce.Type, cloudEventTypePrefix),
		"eventId":   cloudEventKey(*ce.Source, *ce.ID),
	}
	if ce.Time != nil {
		ev["timestamp"] = *ce.Time
	}
	if len(ce.Data) > 0 && string(ce.Data) != "null" {
		if ce.Data[0] != '{' {
			return nil, invalid("data must be a JSON object (the eventData)")
		}
		ev["eventData"] = ce.Data
	}
	return ev, nil
}

// DecodeCloudEvents decodes a structured CloudEvent or a batch of them into
// validated events, with the same rules (and batch error indexes) as the
// native batch.
func (d Decoder) DecodeCloudEvents(body []byte, batch bool) ([]Event, error) {
	if !utf8.Valid(body) {
		return nil, invalid("body must be UTF-8 encoded JSON")
	}
	if err := noDuplicateKeys(body); err != nil {
		return nil, err
	}
	var raws []json.RawMessage
	if batch {
		if err := decodeStrict(body, &raws); err != nil {
			return nil, invalid("body must be a JSON array of CloudEvents")
		}
		if len(raws) == 0 {
			return nil, apperr.Errorf(apperr.Invalid, "a batch holds 1 to %d events", MaxBatchEvents)
		}
		if len(raws) > MaxBatchEvents {
			return nil, apperr.Errorf(apperr.TooLarge, "a batch holds at most %d events", MaxBatchEvents)
		}
	} else {
		raws = []json.RawMessage{body}
	}
	native := make([]map[string]any, len(raws))
	for i, raw := range raws {
		var ce cloudEvent
		if err := decodeStrict(raw, &ce); err != nil {
			return nil, &apperr.Error{Code: apperr.Invalid, Message: "not a structured CloudEvent in JSON", Index: i}
		}
		ev, err := ce.toNative()
		if err != nil {
			if batch {
				return nil, apperr.AtIndex(err, i)
			}
			return nil, err
		}
		native[i] = ev
	}
	// Validate through the native decoder so both formats follow one set
	// of rules. Events before a failing one are returned for authorisation.
	b, err := json.Marshal(map[string]any{"events": native})
	if err != nil {
		return nil, invalid("event cannot be re-encoded")
	}
	events, err := d.DecodeBatch(b)
	if err != nil && !batch {
		return nil, apperr.AtIndex(err, -1) // a single event has no index
	}
	return events, err
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("body must hold a single JSON value")
	}
	return nil
}

// noDuplicateKeys refuses JSON that repeats a key in any object, with the
// same scanner the native decoder uses.
func noDuplicateKeys(data []byte) error {
	_, _, _, err := scanBody(data)
	return err
}

// RecordCloudEvents records a structured CloudEvent (batch false) or a
// CloudEvents batch, atomically like the native batch.
func (s *Service) RecordCloudEvents(ctx context.Context, caller auth.Principal, body []byte, batch bool) (Result, error) {
	events, err := s.decoder.DecodeCloudEvents(body, batch)
	if err != nil && apperr.IndexOf(err) < 0 {
		s.reject(1)
		return Result{}, err
	}
	return s.record(ctx, caller, events, err, batch)
}
