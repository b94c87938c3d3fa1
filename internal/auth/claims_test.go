package auth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// signPayload signs payload, byte for byte, as an HS256 token.
func signPayload(t testing.TB, payload []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// FuzzVerifyClaims signs arbitrary payloads with the real key, so every
// token reaches claim decoding and validation, and compares the verdict
// with refClaims, an independent reading of the payload by RFC 7519's
// rules: exact (case-sensitive) claim names, no repeated name, valid UTF-8
// with every string exact, sub by the user id rule.
func FuzzVerifyClaims(f *testing.F) {
	v, err := NewVerifier(f.Context(), Config{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	exp := time.Now().Add(24 * time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()
	for _, p := range []string{
		`{"sub":"alice","exp":%[1]d}`,
		`{"sub":"alice","roles":["admin"],"exp":%[1]d}`,
		`{"sub":"mallory","Roles":["admin"],"exp":%[1]d}`,
		`{"sub":"alice","SUB":"bob","exp":%[1]d}`,
		`{"SUB":"bob","sub":"alice","exp":%[1]d}`,
		`{"Sub":"bob","exp":%[1]d}`,
		`{"sub":"alice","exp":%[2]d,"EXP":%[1]d}`,
		`{"sub":"alice","EXP":%[1]d}`,
		`{"sub":"alice","sub":"bob","exp":%[1]d}`,
		`{"sub":"alice","s\u0075b":"bob","exp":%[1]d}`,
		`{"sub":"alice","exp":%[1]d,"exp":%[1]d}`,
		`{"sub":"alice","roles":[],"roles":["admin"],"exp":%[1]d}`,
		`{"sub":"alice","x":{"a":1,"a":2},"exp":%[1]d}`,
		`{"sub":"a\u0000b","exp":%[1]d}`,
		`{"sub":"a\u0085b","exp":%[1]d}`,
		`{"sub":"a\ud800b","exp":%[1]d}`,
		`{"sub":"\ud83d\ude00","exp":%[1]d}`,
		`{"sub":"a\\ud800","exp":%[1]d}`,
		"{\"sub\":\"a\xffb\",\"exp\":%[1]d}",
		`{"sub":"` + strings.Repeat("é", 256) + `","exp":%[1]d}`,
		`{"sub":"` + strings.Repeat("x", 257) + `","exp":%[1]d}`,
		`{"sub":"alice","exp":"%[1]d"}`,
		`{"sub":"alice","exp":%[1]d,"nbf":null,"aud":["x"],"iss":"i"}`,
		`{"sub":"alice","exp":%[1]d} {}`,
		`{"sub":"alice","exp":%[1]d,"roles":"admin"}`,
		`["sub","alice"]`,
		` {"sub" : "alice" , "exp" : %[1]d } `,
		`{"x":"}\"{,","sub":"alice","exp":%[1]d}`,
		`{"x":[{"a":"]","sub":"bob"}],"sub":"alice","exp":%[1]d}`,
		`{"x":true,"y":null,"z":-1.5e3,"sub":"alice","exp":%[1]d,"w":{}}`,
		`{"\\":1,"sub":"alice","exp":%[1]d,"\\":2}`,
		`{}`,
	} {
		f.Add([]byte(fmt.Sprintf(p, exp, past)))
	}
	now := time.Now().Unix()
	f.Fuzz(func(t *testing.T, payload []byte) {
		p, err := v.Verify(t.Context(), "Bearer "+signPayload(t, payload))
		ref := readClaims(payload)
		if err == nil {
			// Accepted: the payload is a clean claims set, and the caller is
			// exactly its sub and roles.
			if !ref.valid || ref.duplicate {
				t.Fatalf("accepted %q: valid %v, duplicate %v", payload, ref.valid, ref.duplicate)
			}
			sub, ok := ref.str("sub")
			if !ok || !validUserID(sub) || p.UserID != sub {
				t.Fatalf("accepted %q as %q; sub %q (%v)", payload, p.UserID, sub, ok)
			}
			if !slices.Equal(p.Roles, ref.roles()) {
				t.Fatalf("accepted %q with roles %q, want %q", payload, p.Roles, ref.roles())
			}
			if _, ok := ref.number("exp"); !ok {
				t.Fatalf("accepted %q without a numeric exp", payload)
			}
			return
		}
		// Refused: then something about it is wrong. A clean set with a
		// valid sub, a future integer exp and roles absent or strings, and
		// no other registered claim (whose checks the reference does not
		// model), must pass whatever else it carries.
		if !ref.valid || ref.duplicate {
			return
		}
		for _, name := range []string{"iss", "aud", "nbf", "iat", "jti"} {
			if _, ok := ref.members[name]; ok {
				return
			}
		}
		sub, ok := ref.str("sub")
		if !ok || !validUserID(sub) {
			return
		}
		e, ok := ref.number("exp")
		if !ok || e < float64(now+60) || e > float64(now+100*365*86400) {
			return
		}
		if raw, ok := ref.members["roles"]; ok && string(raw) != "null" {
			var roles []string
			if json.Unmarshal(raw, &roles) != nil {
				return
			}
		}
		t.Fatalf("refused a clean claims set %q: %v", payload, err)
	})
}

// validUserID restates the user id rule: 1-256 characters of valid UTF-8,
// none of them a control character (C0, DEL, C1).
func validUserID(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	n := 0
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return false
		}
		n++
	}
	return n >= 1 && n <= 256
}

// refClaims is the reference reading of a claims set.
type refClaims struct {
	valid     bool              // one JSON object in valid UTF-8, every string exact Unicode
	duplicate bool              // a top-level name occurs twice
	members   map[string][]byte // raw values by exact (unescaped) name
}

func (c refClaims) str(name string) (string, bool) {
	raw, ok := c.members[name]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	s, _, ok := refString(raw, 0)
	return s, ok
}

func (c refClaims) number(name string) (float64, bool) {
	raw, ok := c.members[name]
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

func (c refClaims) roles() []string {
	var roles []string
	if raw, ok := c.members["roles"]; ok {
		_ = json.Unmarshal(raw, &roles)
	}
	return roles
}

// readClaims reads payload with its own scanner. Only the syntax check is
// borrowed (json.Valid); names, strings and duplicates are its own.
func readClaims(payload []byte) refClaims {
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return refClaims{}
	}
	i := refWS(payload, 0)
	if payload[i] != '{' {
		return refClaims{}
	}
	c := refClaims{valid: true, members: map[string][]byte{}}
	i = refWS(payload, i+1)
	if payload[i] == '}' {
		return c
	}
	for {
		name, end, ok := refString(payload, i)
		if !ok {
			return refClaims{}
		}
		i = refWS(payload, end) + 1 // past ':'
		i = refWS(payload, i)
		vend, ok := refValue(payload, i)
		if !ok {
			return refClaims{}
		}
		if _, seen := c.members[name]; seen {
			c.duplicate = true
		}
		c.members[name] = payload[i:vend]
		i = refWS(payload, vend)
		if payload[i] == '}' {
			return c
		}
		i = refWS(payload, i+1) // past ','
	}
}

func refWS(b []byte, i int) int {
	for i < len(b) && strings.IndexByte(" \t\r\n", b[i]) >= 0 {
		i++
	}
	return i
}

// refValue returns the end of the (syntactically valid) value at b[i],
// and false if a string in it is not exact Unicode.
func refValue(b []byte, i int) (int, bool) {
	switch b[i] {
	case '"':
		_, end, ok := refString(b, i)
		return end, ok
	case '{', '[':
		closer := b[i] + 2
		i = refWS(b, i+1)
		if b[i] == closer {
			return i + 1, true
		}
		for {
			if closer == '}' {
				_, end, ok := refString(b, i)
				if !ok {
					return 0, false
				}
				i = refWS(b, refWS(b, end)+1)
			}
			end, ok := refValue(b, i)
			if !ok {
				return 0, false
			}
			i = refWS(b, end)
			if b[i] == closer {
				return i + 1, true
			}
			i = refWS(b, i+1)
		}
	default: // number, true, false, null
		for i < len(b) && strings.IndexByte("+-.0123456789eEtrufalsn", b[i]) >= 0 {
			i++
		}
		return i, true
	}
}

// refString decodes the JSON string at b[i]; false when an escape names a
// UTF-16 surrogate that is not half of a pair.
func refString(b []byte, i int) (string, int, bool) {
	var out []rune
	i++ // opening quote
	for {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == '"':
			return string(out), i + 1, true
		case r != '\\':
			out = append(out, r)
			i += size
			continue
		}
		esc := b[i+1]
		i += 2
		if esc != 'u' {
			out = append(out, map[byte]rune{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[esc])
			continue
		}
		u, _ := strconv.ParseUint(string(b[i:i+4]), 16, 16)
		i += 4
		r = rune(u)
		if utf16.IsSurrogate(r) {
			if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
				return "", 0, false
			}
			lo, _ := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
			if r = utf16.DecodeRune(r, rune(lo)); r == utf8.RuneError {
				return "", 0, false
			}
			i += 6
		}
		out = append(out, r)
	}
}

// The user id rule, case by case, as the verifier applies it to sub.
func TestSubFollowsUserIDRule(t *testing.T) {
	v, _ := NewVerifier(t.Context(), Config{Secret: secret})
	exp := time.Now().Add(time.Hour).Unix()
	for sub, ok := range map[string]bool{
		"alice": true, strings.Repeat("é", 256): true, strings.Repeat("x", 256): true, "😀 ü": true, "a b": true,
		"": false, strings.Repeat("x", 257): false, strings.Repeat("é", 257): false, "a\x00b": false,
		"a\tb": false, "a\x7fb": false, "a\u0085b": false, "a\u009fb": false,
	} {
		payload, _ := json.Marshal(map[string]any{"sub": sub, "exp": exp})
		_, err := v.Verify(t.Context(), "Bearer "+signPayload(t, payload))
		if (err == nil) != ok {
			t.Errorf("sub %q: err %v, want ok %v", sub, err, ok)
		}
		if ok != validUserID(sub) {
			t.Errorf("sub %q: the reference rule disagrees", sub)
		}
	}
}

func TestUnpairedSurrogate(t *testing.T) {
	for in, want := range map[string]bool{
		`"a"`: false, `"\ud83d\ude00"`: false, `"\uD83D\uDE00"`: false, `"\\ud800"`: false, `"\\\ud800"`: true,
		`"\ud800"`: true, `"\udc00"`: true, `"\ud800\u0041"`: true, `"\ud800x"`: true, `"\ude00\ud83d"`: true,
		`"\ud83d\ude00\ud800"`: true, `"\u00e9"`: false,
	} {
		if got := unpairedSurrogate([]byte(in)); got != want {
			t.Errorf("unpairedSurrogate(%s) = %v, want %v", in, got, want)
		}
	}
}
