package wire

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"proxyusage/internal/apperr"
	"proxyusage/internal/ingest"
)

// The fast decoder must answer exactly like the encoding/json reference:
// the same events, and the same error code, message and index.

func refOf(d Decoder) refDecoder { return refDecoder{Window: d.Window, Now: d.Now} }

func sameError(a, b error) error {
	if (a == nil) != (b == nil) {
		return fmt.Errorf("error %v, reference %v", a, b)
	}
	if a == nil {
		return nil
	}
	var x, y *apperr.Error
	if !errors.As(a, &x) || !errors.As(b, &y) {
		return fmt.Errorf("not client errors: %v, reference %v", a, b)
	}
	if *x != *y {
		return fmt.Errorf("error %+v, reference %+v", *x, *y)
	}
	return nil
}

func compareDecoders(t *testing.T, d Decoder, body []byte) {
	t.Helper()
	ref := refOf(d)
	e1, err1 := d.DecodeOne(body, "proxy-1")
	e2, err2 := ref.DecodeOne(body, "proxy-1")
	if err := sameError(err1, err2); err != nil {
		t.Fatalf("DecodeOne(%q): %v", body, err)
	}
	// A refused event is not returned (the reference returns what it had
	// read before the fault; no caller looks at it).
	if err1 != nil {
		e2 = ingest.Event{}
	}
	if !reflect.DeepEqual(e1, e2) {
		t.Fatalf("DecodeOne(%q):\n got %+v\nwant %+v", body, e1, e2)
	}
	b1, n1, err1 := d.DecodeBatch(body)
	b2, n2, err2 := ref.DecodeBatch(body)
	if err := sameError(err1, err2); err != nil {
		t.Fatalf("DecodeBatch(%q): %v", body, err)
	}
	if !reflect.DeepEqual(b1, b2) || n1 != n2 {
		t.Fatalf("DecodeBatch(%q):\n got %d: %+v\nwant %d: %+v", body, n1, b1, n2, b2)
	}
}

var trickyBodies = []string{
	``, ` `, `null`, ` null `, `true`, `0`, `01`, `1 2`, `"x"`, `[]`, `[1]`, `{}`, `{} {}`, `{}{}`, `{}x`, `{}]`,
	`{"eventType":"error"}`, `{"EVENTTYPE":"error"}`, `{"eventtype":"error","eventType":"bogus"}`,
	`{"eventType":"error","eventType":"error"}`, `{"eventType":"error","\u0065ventType":"error"}`,
	`{"eventType":"err\u006fr"}`, `{"eventType":"error\u0000"}`, `{"eventType":1}`, `{"eventType":null}`,
	`{"eventType":"error","eventId":null}`, `{"eventType":"error","eventId":""}`, `{"eventType":"error","eventId":"\ud800"}`,
	`{"eventType":"error","eventId":"\ud83d\ude00"}`, `{"eventType":"error","eventId":"\ud83dx"}`, `{"eventType":"error","eventId":"\u0000"}`,
	`{"eventType":"error","eventData":null}`, `{"eventType":"error","eventData":5}`, `{"eventType":"error","eventData":[]}`,
	`{"eventType":"error","eventData":{"connectionId":5}}`, `{"eventType":5,"eventData":{"connectionId":5}}`,
	`{"eventType":"connection_start","eventData":{"connectionId":"a"},"EventData":{"bytesSent":1}}`,
	`{"eventType":"connection_start","eventData":{"connectionId":"a"},"eventData":null}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":null,"dataBytes":1}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":"1"}}`, `{"eventType":"data_transfer","eventData":{"bytesSent":1.0}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":1e3}}`, `{"eventType":"data_transfer","eventData":{"bytesSent":{"a":[1]}}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":9223372036854775808}}`, `{"eventType":"data_transfer","eventData":{"bytesSent":-1}}`,
	`{"eventType":"data_transfer","eventData":{"latencyMs":-0.0}}`, `{"eventType":"data_transfer","eventData":{"latencyMs":true}}`,
	`{"eventType":"data_transfer","eventData":{"durationSeconds":31536000}}`, `{"eventType":"data_transfer","eventData":{"durationSeconds":31536000.0000005}}`,
	`{"eventType":"data_transfer","eventData":{"durationSeconds":3.1536e7}}`, `{"eventType":"data_transfer","eventData":{"durationSeconds":31536000.000001}}`,
	`{"eventType":"data_transfer","eventData":{"latencyMs":3600000}}`, `{"eventType":"data_transfer","eventData":{"latencyMs":3600000.001}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":1125899906842624,"bytesReceived":1125899906842624}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":1125899906842625}}`, `{"eventType":"data_transfer","eventData":{"dataBytes":1125899906842625}}`,
	`{"eventType":"data_transfer","eventData":{"bytesReceived":1125899906842625}}`, `{"eventType":"data_transfer","eventData":{"bytesSent":9223372036854775807}}`,
	`{"eventType":"data_transfer","eventData":{"bytesSent":-0}}`, `{"eventType":"data_transfer","eventData":{"bytesSent":1125899906842624.0}}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00Z"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00.1234567891Z"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00,5Z"}`, `{"eventType":"error","timestamp":"2026-06-15t11:00:00z"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00.Z"}`, `{"eventType":"error","timestamp":"2026-02-29T11:00:00Z"}`,
	`{"eventType":"error","timestamp":"2026-06-15T24:00:00Z"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:60Z"}`,
	`{"eventType":"error","timestamp":"2026-06-15T13:00:00+02:00"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00.000001-00:00"}`,
	`{"eventType":"error","timestamp":"2026-06-31T11:00:00Z"}`, `{"eventType":"error","timestamp":"2026-6-15T11:00:00Z"}`,
	`{"eventType":"error","eventData":{"ipAddress":"fe80::1%eth0"}}`, `{"eventType":"error","eventData":{"ipAddress":"::ffff:10.0.0.1"}}`,
	`{"eventType":"error","eventData":{"errorMessage":""}}`, `{"eventType":"error","unknown":{"deep":[1,{"x":null}]}}`,
	`{"eventType":"error","unknown":{"a":1,"a":2}}`, `{"a":[{"b":1,"b":2}]}`, `{"eventType":"error",}`, `{"eventType" "error"}`,
	`{"eventType":"error"`, `{"eventType":"err`, `{"eventType":"a\x"}`, `{"eventType":"a` + "\n" + `"}`, "{\"eventType\":\"\xff\"}",
	`{"events":null}`, `{"events":{}}`, `{"events":[]}`, `{"events":[null]}`, `{"events":[1]}`, `{"events":["x"]}`, `{"EVENTS":[{}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"}],"events":[]}`, `{"events":5,"events":[{"proxyId":"p","eventType":"error"}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"}]} {}`, `{"events":[{"proxyId":".","eventType":"error"}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":"a b","eventType":"error"}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":5}]}`, `{"events":[{"proxyId":"p\u002dq","eventType":"error"}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"},{"eventType":"error"}]}`, `{"events":[{"proxyId":null,"eventType":"error"}]}`,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001), strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	`{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, `{} ` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat("[", 20000) + "x",
	// Names are exact: case variants and unknown names are refused, first
	// in document order, before any wrong type; a single event has no
	// proxyId (the path names the proxy).
	`{"eventType":"data_transfer","EVENTTYPE":"error"}`, `{"EVENTTYPE":"error","eventType":"data_transfer"}`,
	`{"eventType":"error","eventData":{"BytesSent":1}}`, `{"eventType":5,"x":1}`, `{"eventType":"error","eventData":5,"x":1}`,
	`{"eventType":"error","eventData":{"bytesSent":"x","y":1}}`, `{"eventType":"error","proxyId":"p"}`,
	`{"eventType":"error","eventData":{"connectionId":"c","\u0063onnectionId":"d"}}`, `{"eventType":"error","eventdata":{}}`,
	`{"eventType":"error","x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, `{"x":1`, `{"x":1} {`, `{"x":1} x`,
	`{"events":[{"proxyId":"p","eventType":"error"}],"EVENTS":[]}`, `{"EVENTS":[],"events":[{"proxyId":"p","eventType":"error"}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":"p","eventType":"error","Timestamp":"x"}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":"p","eventType":"error","eventData":{"ERRORMESSAGE":"x"}}]}`,
	`{"events":[{"proxyId":"p","eventType":"error"}],"x":{"a":1,"a":2}}`, `{"events":[],"x":1}`,
	// NUL and lone surrogates anywhere: refused for the whole body.
	`{"eventType":"error","eventData":{"errorMessage":"a\u0000b"}}`, `{"eventType":"error","x\u0000":1}`,
	`{"eventType":"error","eventId":"\udc00"}`, `{"eventType":"error","eventId":"\ud800\ud800\udc00"}`,
	`{"eventType":"error","eventId":"\ud800\u0000"}`, `{"eventType":"error","eventId":"\u0000\ud800"}`,
	`{"eventType":"error","eventId":"\ud800\n"}`, `{"eventType":"error","eventId":"\ud800"`, `{"eventType":"error","eventId":"\\u0000"}`,
	`{"events":[{"proxyId":"p","eventType":"error"},{"proxyId":"p","eventType":"error","eventId":"\udfff"}]}`,
	`{"a":"\u0000","a":1}`, `{"a":1,"a":"\u0000"}`, `{"a":"\u0000" x}`, `{"a" "\u0000"}`, `"\u0000\x"`,
	// Timestamps: RFC 3339 with offsets of at most ±23:59.
	`{"eventType":"error","timestamp":"2026-06-15T12:00:00+24:00"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00+00:60"}`,
	`{"eventType":"error","timestamp":"2026-06-15T13:59:00+23:59"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00-23:59"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00+0200"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00+02"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00.5+01:00"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00,5+01:00"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00.123456789123+00:00"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00.+00:00"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00+1a:00"}`, `{"eventType":"error","timestamp":"2026-06-15T11:00:00Z+01:00"}`,
	`{"eventType":"error","timestamp":"2026-06-15T11:00:00\u002B01:00"}`, `{"eventType":"error","timestamp":"2024-02-29T11:00:00Z"}`,
	// The domain's rules (ingest.Event.Validate) and the decoder's syntax
	// interleave: an event's first fault in field order is the one named.
	`{"eventType":"bogus","timestamp":"x"}`, `{"eventType":"bogus","eventId":""}`, `{"eventType":"error","eventId":"","timestamp":"x"}`,
	`{"eventType":"error","eventId":"` + strings.Repeat("a", 129) + `","timestamp":"x"}`, `{"eventType":"error","eventId":"` + strings.Repeat("é", 128) + `"}`,
	`{"eventType":"error","timestamp":"2020-01-01T00:00:00Z","eventData":{"connectionId":""}}`,
	`{"eventType":"connection_start","timestamp":"x","eventData":{"connectionId":""}}`, `{"eventType":"connection_start","eventData":{"connectionId":""}}`,
	`{"eventType":"connection_end","eventData":{"bytesSent":1,"dataBytes":2}}`, `{"eventType":"data_transfer","eventData":{"connectionId":"","bytesSent":1,"dataBytes":2}}`,
	`{"eventType":"connection_end","eventData":{"bytesSent":"x"}}`, `{"eventType":"data_transfer","eventData":{"dataBytes":-1,"bytesReceived":"x"}}`,
	`{"eventType":"data_transfer","eventData":{"dataBytes":99999999999999999999}}`, `{"eventType":"data_transfer","eventData":{"dataBytes":-99999999999999999999}}`,
	`{"eventType":"data_transfer","eventData":{"dataBytes":"1"}}`, `{"eventType":"data_transfer","eventData":{"dataBytes":-0,"durationSeconds":"x"}}`,
	`{"eventType":"data_transfer","eventData":{"durationSeconds":31536000.0000004}}`, `{"eventType":"data_transfer","eventData":{"durationSeconds":31536000.000000004}}`,
	`{"eventType":"data_transfer","eventData":{"latencyMs":3600000.0000004}}`, `{"eventType":"data_transfer","eventData":{"latencyMs":-0.0000001}}`,
	`{"eventType":"data_transfer","eventData":{"durationSeconds":-1e-400}}`, `{"eventType":"data_transfer","eventData":{"durationSeconds":1e-400}}`,
	`{"eventType":"data_transfer","eventData":{"durationSeconds":1e400}}`, `{"eventType":"data_transfer","eventData":{"latencyMs":-1e400}}`,
	`{"eventType":"data_transfer","eventData":{"durationSeconds":-1,"latencyMs":"x"}}`, `{"eventType":"data_transfer","eventData":{"latencyMs":1e9,"errorMessage":"a\u0000"}}`,
	`{"eventType":"error","eventData":{"errorMessage":"` + strings.Repeat("x", 1025) + `","ipAddress":"x"}}`,
	`{"eventType":"error","eventData":{"errorMessage":"` + strings.Repeat("é", 1024) + `"}}`, `{"eventType":"bogus","eventData":{"ipAddress":"x"}}`,
	`{"eventType":"","eventData":{"ipAddress":"x"}}`, `{"eventType":"error","timestamp":"2026-06-15T12:05:00.000001Z","eventData":{"bytesSent":1.5}}`,
}

func TestDecoderMatchesReference(t *testing.T) {
	d := fuzzDecoder()
	bodies := append([]string{}, trickyBodies...)
	for _, s := range eventSeeds {
		bodies = append(bodies, s, `{"events":[`+strings.Replace(s, `{`, `{"proxyId":"p1",`, 1)+`]}`)
	}
	many := `{"events":[` + strings.Repeat(`{"proxyId":"p","eventType":"error"},`, 10000) + `{"proxyId":"p","eventType":"error"}]}`
	wide := `{` + strings.Repeat(`"k":1,`, 0)
	for i := range 100 {
		wide += fmt.Sprintf(`"k%d":1,`, i)
	}
	bodies = append(bodies, many, wide+`"k7":2}`, wide+`"eventType":"error"}`)
	for _, b := range bodies {
		compareDecoders(t, d, []byte(b))
	}
}

// Mutations of realistic bodies: random splices of JSON-significant text.
func TestDecoderMatchesReferenceMutations(t *testing.T) {
	d := fuzzDecoder()
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{`"`, `\`, `{`, `}`, `[`, `]`, `,`, `:`, ` `, `null`, `true`, `0`, `-`, `.`, `e`, `1`, `\u00`, `\ud800`,
		`"eventType"`, `"eventData"`, `"events"`, `"proxyId"`, `"EventId"`, `"bytesSent":`, `"dataBytes":1,`, `"x":"y",`,
		`"connection_start"`, `"2026-06-15T11:00:00Z"`, "\x00", "é", `\"`, `\n`, `"EVENTTYPE"`, `"eventtype"`, `"x":1,`,
		`+24:00`, `+00:60`, `+23:59`, `-01:00`, `,5`, `\u0000`, `\udc00`, `\ud800\udc00`, `"proxyId":"p",`}
	base := []string{
		`{"events":[{"proxyId":"p1","eventType":"connection_start","eventId":"e1","timestamp":"2026-06-15T11:00:00.123456Z","eventData":{"connectionId":"c1","latencyMs":12.5,"ipAddress":"10.0.0.1"}},{"proxyId":"p2","eventType":"connection_end","eventData":{"connectionId":"c1","durationSeconds":3.25,"bytesSent":10,"bytesReceived":20}}]}`,
		`{"eventType":"data_transfer","eventId":"e2","timestamp":"2026-06-15T11:59:00Z","eventData":{"connectionId":"c9","dataBytes":100,"latencyMs":0.5}}`,
	}
	n := 30000
	if testing.Short() {
		n = 3000
	}
	for range n {
		b := []byte(base[rng.IntN(len(base))])
		for range 1 + rng.IntN(3) {
			at := rng.IntN(len(b) + 1)
			switch rng.IntN(3) {
			case 0: // insert
				b = append(b[:at:at], append([]byte(pieces[rng.IntN(len(pieces))]), b[at:]...)...)
			case 1: // delete
				end := min(len(b), at+1+rng.IntN(4))
				b = append(b[:at:at], b[end:]...)
			case 2: // replace
				end := min(len(b), at+1)
				b = append(b[:at:at], append([]byte(pieces[rng.IntN(len(pieces))]), b[end:]...)...)
			}
		}
		compareDecoders(t, d, b)
	}
}

func FuzzDecodeMatchesReference(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(s))
	}
	for _, s := range trickyBodies[:40] {
		f.Add([]byte(s))
	}
	d := fuzzDecoder()
	f.Fuzz(func(t *testing.T, body []byte) { compareDecoders(t, d, body) })
}

// BenchmarkDecodeBatchReference is BenchmarkDecodeBatch on the old
// reflection-based decoder, for comparison.
func BenchmarkDecodeBatchReference(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"events":[`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"proxyId":"proxy-%d","eventType":"data_transfer","eventId":"evt-%d","timestamp":"2026-06-15T11:00:00.123456Z","eventData":{"connectionId":"c-%d","bytesSent":12345,"bytesReceived":678,"latencyMs":12.5,"ipAddress":"10.1.2.3"}}`, i%50, i, i)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	d := refOf(fuzzDecoder())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := d.DecodeBatch(body); err != nil {
			b.Fatal(err)
		}
	}
}
