package workload

import (
	"strconv"
	"time"

	"proxyusage/internal/ingest"
)

// AppendJSON appends e as the API's JSON event. With withProxy the event
// carries its proxyId (batch endpoint); without, it is the body of the
// single-event endpoint, whose path names the proxy.
func AppendJSON(dst []byte, e *ingest.Event, withProxy bool) []byte {
	dst = append(dst, '{')
	if withProxy {
		dst = append(dst, `"proxyId":`...)
		dst = strconv.AppendQuote(dst, e.ProxyID)
		dst = append(dst, ',')
	}
	dst = append(dst, `"eventType":"`...)
	dst = append(dst, e.Type...)
	dst = append(dst, '"')
	if e.EventID != "" {
		dst = append(dst, `,"eventId":`...)
		dst = strconv.AppendQuote(dst, e.EventID)
	}
	dst = append(dst, `,"timestamp":"`...)
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","eventData":{`...)
	first := true
	field := func(name string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `":`...)
	}
	if e.ConnectionID != "" {
		field("connectionId")
		dst = strconv.AppendQuote(dst, e.ConnectionID)
	}
	if e.BytesSent != 0 {
		field("bytesSent")
		dst = strconv.AppendInt(dst, e.BytesSent, 10)
	}
	if e.BytesReceived != 0 {
		field("bytesReceived")
		dst = strconv.AppendInt(dst, e.BytesReceived, 10)
	}
	if e.HasDuration {
		field("durationSeconds")
		dst = appendFixed(dst, e.DurationUS, 1_000_000)
	}
	if e.HasLatency {
		field("latencyMs")
		dst = appendFixed(dst, e.LatencyUS, 1_000)
	}
	if e.ErrorMessage != "" {
		field("errorMessage")
		dst = strconv.AppendQuote(dst, e.ErrorMessage)
	}
	if e.IP.IsValid() {
		field("ipAddress")
		dst = append(dst, '"')
		dst = e.IP.AppendTo(dst)
		dst = append(dst, '"')
	}
	return append(dst, "}}"...)
}

// appendFixed writes v/unit exactly as a decimal (unit a power of ten).
func appendFixed(dst []byte, v, unit int64) []byte {
	dst = strconv.AppendInt(dst, v/unit, 10)
	frac := v % unit
	if frac == 0 {
		return dst
	}
	dst = append(dst, '.')
	s := strconv.FormatInt(frac+unit, 10)[1:] // zero-padded
	return append(dst, s...)
}

// AppendBatch appends the body of the batch endpoint holding events.
func AppendBatch(dst []byte, events []ingest.Event) []byte {
	dst = append(dst, `{"events":[`...)
	for i := range events {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSON(dst, &events[i], true)
	}
	return append(dst, "]}"...)
}
