package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Claims is the token payload we read: the registered claims and roles.
type Claims struct {
	Roles []string `json:"roles,omitempty"`
	jwt.RegisteredClaims
}

var (
	errDuplicateClaim = errors.New("duplicate claim")
	errClaimsText     = errors.New("claims are not valid UTF-8")
	errClaimsShape    = errors.New("claims are not one JSON object")
)

// UnmarshalJSON decodes a JWT claims set as RFC 7519 reads it, where
// encoding/json would not:
//
//   - claim names are case-sensitive: "Roles", "SUB" and "EXP" are other,
//     unknown claims and ignored (encoding/json would let them fill roles,
//     sub and exp);
//   - a set that names a claim twice is refused, rather than letting the
//     last one win;
//   - the set is valid UTF-8 with no unpaired surrogate escape, so every
//     string decodes to exactly what was signed (encoding/json turns both
//     into U+FFFD, and two different subs would name the same user).
//
// golang-jwt decodes the payload through this method before it checks the
// signature and the time claims, so those checks see the exact claims.
func (c *Claims) UnmarshalJSON(b []byte) error {
	members, err := claimMembers(b)
	if err != nil {
		return err
	}
	*c = Claims{}
	for _, f := range []struct {
		name string
		dst  any
	}{
		{"iss", &c.Issuer}, {"sub", &c.Subject}, {"aud", &c.Audience}, {"exp", &c.ExpiresAt},
		{"nbf", &c.NotBefore}, {"iat", &c.IssuedAt}, {"jti", &c.ID}, {"roles", &c.Roles},
	} {
		raw, ok := members[f.name]
		if !ok {
			continue
		}
		if _, date := f.dst.(**jwt.NumericDate); date && !isNumber(raw) && string(raw) != "null" {
			// A NumericDate is a JSON number (null: absent); jwt.NumericDate
			// alone would also take "123", a string.
			return fmt.Errorf("claim %s: %w", f.name, errClaimsShape)
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return fmt.Errorf("claim %s: %w", f.name, err)
		}
	}
	return nil
}

// isNumber reports whether raw, one JSON value, is a number.
func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// claimMembers splits a claims set into its top-level members by exact
// name, refusing duplicates, invalid UTF-8, unpaired surrogate escapes and
// anything but a single JSON object.
func claimMembers(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) || unpairedSurrogate(b) {
		return nil, errClaimsText
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errClaimsShape
	}
	members := make(map[string]json.RawMessage, 8)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errClaimsShape
		}
		name, ok := tok.(string) // the decoder only yields strings as names
		if !ok {
			return nil, errClaimsShape
		}
		if _, dup := members[name]; dup {
			return nil, errDuplicateClaim
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errClaimsShape
		}
		members[name] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errClaimsShape
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errClaimsShape
	}
	return members, nil
}

// unpairedSurrogate reports whether JSON text b has a \u escape of a
// UTF-16 surrogate that is not half of a high-low pair. A backslash only
// occurs inside strings in valid JSON, so no string tracking is needed;
// invalid JSON fails to decode anyway.
func unpairedSurrogate(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		i++ // the escaped character: skipping it keeps `\\u` from reading as an escape
		if i >= len(b) || b[i] != 'u' {
			continue
		}
		r, ok := hex4(b, i+1)
		if !ok {
			continue
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF: // a low half first
			return true
		case r >= 0xD800 && r <= 0xDBFF: // a high half: a low half must follow
			if i+2 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
				if lo, ok := hex4(b, i+3); ok && lo >= 0xDC00 && lo <= 0xDFFF {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}

// hex4 reads the four hex digits of a \u escape at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
