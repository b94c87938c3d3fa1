package ingest

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apperr"
)

var (
	testNow    = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	testWindow = Window{Late: 35 * 24 * time.Hour, Future: 5 * time.Minute}
)

// validEvent is an event every rule accepts; each case changes one field.
func validEvent() Event {
	return Event{ProxyID: "p1", Type: ConnectionEnd, EventID: "e1", Time: testNow.Add(-time.Hour), ConnectionID: "c1",
		BytesSent: 10, BytesReceived: 20, DurationUS: 1_500_000, HasDuration: true, LatencyUS: 500, HasLatency: true, ErrorMessage: "x"}
}

// Each rule at its limits: the exact limit passes, one past it is refused
// with the message (and code) the API documents.
func TestEventValidate(t *testing.T) {
	const (
		typeMsg     = "eventType must be one of connection_start, connection_end, data_transfer, error"
		idMsg       = "eventId must be text of 1 to 128 characters"
		connMsg     = "eventData.connectionId must be text of 1 to 128 characters"
		sentMsg     = "eventData.bytesSent must be an integer from 0 to 1125899906842624"
		receivedMsg = "eventData.bytesReceived must be an integer from 0 to 1125899906842624"
		durationMsg = "eventData.durationSeconds must be a number from 0 to 31536000"
		latencyMsg  = "eventData.latencyMs must be a number from 0 to 3600000"
		errMsgMsg   = "eventData.errorMessage must be text of 0 to 1024 characters"
	)
	cases := []struct {
		name  string
		edit  func(*Event)
		field Field  // the field refused; AllFields: valid
		msg   string // its message
	}{
		{"valid", func(e *Event) {}, AllFields, ""},

		{"type connection_start", func(e *Event) { e.Type = ConnectionStart }, AllFields, ""},
		{"type data_transfer", func(e *Event) { e.Type = DataTransfer }, AllFields, ""},
		{"type error", func(e *Event) { e.Type = ErrorEvent }, AllFields, ""},
		{"type empty", func(e *Event) { e.Type = "" }, FieldType, typeMsg},
		{"type unknown", func(e *Event) { e.Type = "bogus" }, FieldType, typeMsg},
		{"type case", func(e *Event) { e.Type = "Error" }, FieldType, typeMsg},

		{"eventId none", func(e *Event) { e.EventID = "" }, AllFields, ""},
		{"eventId 1", func(e *Event) { e.EventID = "a" }, AllFields, ""},
		{"eventId 128", func(e *Event) { e.EventID = strings.Repeat("a", 128) }, AllFields, ""},
		{"eventId 129", func(e *Event) { e.EventID = strings.Repeat("a", 129) }, FieldEventID, idMsg},
		{"eventId 128 runes", func(e *Event) { e.EventID = strings.Repeat("é", 128) }, AllFields, ""},
		{"eventId 129 runes", func(e *Event) { e.EventID = strings.Repeat("é", 129) }, FieldEventID, idMsg},
		{"eventId NUL", func(e *Event) { e.EventID = "a\x00" }, FieldEventID, idMsg},
		{"eventId not UTF-8", func(e *Event) { e.EventID = "a\xff" }, FieldEventID, idMsg},

		{"time now", func(e *Event) { e.Time = testNow }, AllFields, ""},
		{"time future limit", func(e *Event) { e.Time = testNow.Add(5 * time.Minute) }, AllFields, ""},
		{"time future past", func(e *Event) { e.Time = testNow.Add(5*time.Minute + time.Microsecond) }, FieldTime, "timestamp is more than 5m0s in the future"},
		{"time late limit", func(e *Event) { e.Time = testNow.Add(-35 * 24 * time.Hour) }, AllFields, ""},
		{"time late past", func(e *Event) { e.Time = testNow.Add(-35*24*time.Hour - time.Microsecond) }, FieldTime, "timestamp is older than the late-data window of 35 days"},
		{"time zero", func(e *Event) { e.Time = time.Time{} }, FieldTime, "timestamp is older than the late-data window of 35 days"},

		{"connectionId 1", func(e *Event) { e.ConnectionID = "c" }, AllFields, ""},
		{"connectionId 128", func(e *Event) { e.ConnectionID = strings.Repeat("c", 128) }, AllFields, ""},
		{"connectionId 129", func(e *Event) { e.ConnectionID = strings.Repeat("c", 129) }, FieldConnectionID, connMsg},
		{"connectionId 129 runes", func(e *Event) { e.ConnectionID = strings.Repeat("é", 129) }, FieldConnectionID, connMsg},
		{"connectionId NUL", func(e *Event) { e.ConnectionID = "\x00" }, FieldConnectionID, connMsg},
		{"connectionId not UTF-8", func(e *Event) { e.ConnectionID = "\xc3" }, FieldConnectionID, connMsg},
		{"connectionId required end", func(e *Event) { e.ConnectionID = "" }, FieldConnectionID, "eventData.connectionId is required for connection_end"},
		{"connectionId required start", func(e *Event) { e.Type, e.ConnectionID = ConnectionStart, "" }, FieldConnectionID, "eventData.connectionId is required for connection_start"},
		{"connectionId optional data_transfer", func(e *Event) { e.Type, e.ConnectionID = DataTransfer, "" }, AllFields, ""},
		{"connectionId optional error", func(e *Event) { e.Type, e.ConnectionID = ErrorEvent, "" }, AllFields, ""},

		{"bytesSent 0", func(e *Event) { e.BytesSent = 0 }, AllFields, ""},
		{"bytesSent max", func(e *Event) { e.BytesSent = MaxBytes }, AllFields, ""},
		{"bytesSent max+1", func(e *Event) { e.BytesSent = MaxBytes + 1 }, FieldBytesSent, sentMsg},
		{"bytesSent -1", func(e *Event) { e.BytesSent = -1 }, FieldBytesSent, sentMsg},
		{"bytesSent saturated", func(e *Event) { e.BytesSent = math.MaxInt64 }, FieldBytesSent, sentMsg},
		{"bytesReceived 0", func(e *Event) { e.BytesReceived = 0 }, AllFields, ""},
		{"bytesReceived max", func(e *Event) { e.BytesReceived = MaxBytes }, AllFields, ""},
		{"bytesReceived max+1", func(e *Event) { e.BytesReceived = MaxBytes + 1 }, FieldBytesReceived, receivedMsg},
		{"bytesReceived -1", func(e *Event) { e.BytesReceived = -1 }, FieldBytesReceived, receivedMsg},

		{"duration 0", func(e *Event) { e.DurationUS = 0 }, AllFields, ""},
		{"duration max", func(e *Event) { e.DurationUS = MaxDurationSeconds * 1e6 }, AllFields, ""},
		{"duration max+1µs", func(e *Event) { e.DurationUS = MaxDurationSeconds*1e6 + 1 }, FieldDuration, durationMsg},
		{"duration -1µs", func(e *Event) { e.DurationUS = -1 }, FieldDuration, durationMsg},
		{"duration absent", func(e *Event) { e.DurationUS, e.HasDuration = -1, false }, AllFields, ""},
		{"latency 0", func(e *Event) { e.LatencyUS = 0 }, AllFields, ""},
		{"latency max", func(e *Event) { e.LatencyUS = MaxLatencyMs * 1e3 }, AllFields, ""},
		{"latency max+1µs", func(e *Event) { e.LatencyUS = MaxLatencyMs*1e3 + 1 }, FieldLatency, latencyMsg},
		{"latency -1µs", func(e *Event) { e.LatencyUS = -1 }, FieldLatency, latencyMsg},
		{"latency absent", func(e *Event) { e.LatencyUS, e.HasLatency = math.MaxInt64, false }, AllFields, ""},

		{"errorMessage empty", func(e *Event) { e.ErrorMessage = "" }, AllFields, ""},
		{"errorMessage 1024", func(e *Event) { e.ErrorMessage = strings.Repeat("m", 1024) }, AllFields, ""},
		{"errorMessage 1025", func(e *Event) { e.ErrorMessage = strings.Repeat("m", 1025) }, FieldErrorMessage, errMsgMsg},
		{"errorMessage 1024 runes", func(e *Event) { e.ErrorMessage = strings.Repeat("é", 1024) }, AllFields, ""},
		{"errorMessage 1025 runes", func(e *Event) { e.ErrorMessage = strings.Repeat("é", 1025) }, FieldErrorMessage, errMsgMsg},
		{"errorMessage NUL", func(e *Event) { e.ErrorMessage = "a\x00b" }, FieldErrorMessage, errMsgMsg},
		{"errorMessage not UTF-8", func(e *Event) { e.ErrorMessage = "\xff" }, FieldErrorMessage, errMsgMsg},

		// The first broken rule in field order is the one named.
		{"first of type and time", func(e *Event) { e.Type, e.Time = "", time.Time{} }, FieldType, typeMsg},
		{"first of eventId and bytes", func(e *Event) { e.EventID, e.BytesSent = "\x00", -1 }, FieldEventID, idMsg},
		{"first of latency and errorMessage", func(e *Event) { e.LatencyUS, e.ErrorMessage = -1, "\x00" }, FieldLatency, latencyMsg},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := validEvent()
			c.edit(&e)
			err := e.Validate(testWindow, testNow)
			f, err2 := e.CheckBefore(AllFields, testWindow, testNow)
			if f != c.field || (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
				t.Fatalf("CheckBefore: %v, %v; Validate: %v; want field %v", f, err2, err, c.field)
			}
			if c.field == AllFields {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != apperr.Invalid || ae.Message != c.msg || ae.Index != -1 {
				t.Fatalf("got %v, want %s %q", err, apperr.Invalid, c.msg)
			}
			// The rules of the fields before it pass, and so do those
			// before the refused field only.
			if f, err := e.CheckBefore(c.field, testWindow, testNow); f != AllFields || err != nil {
				t.Fatalf("CheckBefore(%v): %v, %v", c.field, f, err)
			}
			if f, err := e.CheckBefore(c.field+1, testWindow, testNow); f != c.field || err == nil {
				t.Fatalf("CheckBefore(%v): %v, %v", c.field+1, f, err)
			}
		})
	}
}

// CheckBefore(FieldType) checks nothing: a decoder that cannot read the
// first field reports its own error.
func TestCheckBeforeNothing(t *testing.T) {
	var e Event
	if f, err := e.CheckBefore(FieldType, testWindow, testNow); f != AllFields || err != nil {
		t.Fatalf("%v, %v", f, err)
	}
	if err := e.Validate(testWindow, testNow); err == nil {
		t.Fatal("the zero Event is valid")
	}
}

// The conversions decide the bound on the value sent: its rounding to whole
// microseconds never lets a value past the bound (or below 0) through.
func TestMicros(t *testing.T) {
	maxD, maxL := float64(MaxDurationSeconds), float64(MaxLatencyMs)
	for _, c := range []struct {
		name string
		conv func(float64) int64
		v    float64
		want int64 // -2: refused by Validate
	}{
		{"duration 0", DurationMicros, 0, 0},
		{"duration -0", DurationMicros, math.Copysign(0, -1), 0},
		{"duration 1.5", DurationMicros, 1.5, 1_500_000},
		{"duration rounds", DurationMicros, 12.3456784, 12_345_678},
		{"duration below a µs", DurationMicros, 1e-7, 0},
		{"duration max", DurationMicros, maxD, MaxDurationSeconds * 1e6},
		{"duration just past max", DurationMicros, math.Nextafter(maxD, math.Inf(1)), -2},
		{"duration past max by 0.4µs", DurationMicros, maxD + 4e-7, -2},
		{"duration max+1", DurationMicros, maxD + 1, -2},
		{"duration just below 0", DurationMicros, -1e-7, -2},
		{"duration -1", DurationMicros, -1, -2},
		{"duration +Inf", DurationMicros, math.Inf(1), -2},
		{"duration -Inf", DurationMicros, math.Inf(-1), -2},
		{"duration NaN", DurationMicros, math.NaN(), -2},
		{"duration 1e308", DurationMicros, 1e308, -2},
		{"latency 0.001", LatencyMicros, 0.001, 1},
		{"latency 12.5", LatencyMicros, 12.5, 12_500},
		{"latency max", LatencyMicros, maxL, MaxLatencyMs * 1e3},
		{"latency just past max", LatencyMicros, math.Nextafter(maxL, math.Inf(1)), -2},
		{"latency past max by 0.4µs", LatencyMicros, maxL + 4e-4, -2},
		{"latency just below 0", LatencyMicros, -1e-4, -2},
		{"latency NaN", LatencyMicros, math.NaN(), -2},
		{"latency +Inf", LatencyMicros, math.Inf(1), -2},
	} {
		got := c.conv(c.v)
		e := validEvent()
		if strings.HasPrefix(c.name, "latency") {
			e.LatencyUS = got
		} else {
			e.DurationUS = got
		}
		err := e.Validate(testWindow, testNow)
		switch {
		case c.want == -2 && err == nil:
			t.Errorf("%s: %v → %d µs, accepted", c.name, c.v, got)
		case c.want != -2 && (got != c.want || err != nil):
			t.Errorf("%s: %v → %d µs (%v), want %d", c.name, c.v, got, err, c.want)
		}
	}
}
