package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
// anything but a single JSON object. Values are slices of b. The walk is
// by hand: json.Decoder's token API cost four times the decoding it
// replaced, and this runs for every token, before its signature is known
// to be good.
func claimMembers(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) || unpairedSurrogate(b) {
		return nil, errClaimsText
	}
	// From here on b is one valid JSON value, so the walk below needs no
	// bounds or syntax checks of its own.
	if !json.Valid(b) {
		return nil, errClaimsShape
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, errClaimsShape
	}
	members := make(map[string]json.RawMessage, 8)
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return members, nil
	}
	for {
		end := stringEnd(b, i)
		name, err := memberName(b[i:end])
		if err != nil {
			return nil, errClaimsShape
		}
		if _, dup := members[name]; dup {
			return nil, errDuplicateClaim
		}
		i = skipSpace(b, skipSpace(b, end)+1) // past ':'
		vend := valueEnd(b, i)
		members[name] = b[i:vend]
		i = skipSpace(b, vend)
		if b[i] == '}' {
			return members, nil
		}
		i = skipSpace(b, i+1) // past ','
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}

// memberName unquotes a member name; escapes are rare, so only they pay
// for encoding/json.
func memberName(raw []byte) (string, error) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
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
