package wire

// A small JSON reader for request bodies, without reflection. It follows
// the strict rules every body of the service follows (internal/strictjson,
// which tests use as the reference in reference_test.go), with the same
// messages:
//
//   - the whole body is checked first: invalid UTF-8 is refused; then the
//     first syntax error, repeated key (after unescaping), NUL (\u0000) or
//     lone UTF-16 surrogate (\ud800) in any object or string, in document
//     order, decides;
//   - the first value may nest at most 10,000 levels;
//   - field names match exactly (case-sensitive); a name the shape does not
//     have is refused, before any wrong type; null resets a field;
//   - a field of the wrong JSON type is reported by its dotted name, the
//     first one in document order, after the whole value is read;
//   - numeric fields keep their raw text (json.RawMessage semantics).
//
// Nothing here recurses on the input, so deep nesting cannot exhaust the
// stack.

import (
	"bytes"
	"cmp"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"proxyusage/internal/strictjson"
)

const maxNestingDepth = strictjson.MaxDepth

const (
	msgNotJSON = strictjson.MsgNotJSON
	msgShape   = strictjson.MsgShape
	msgSingle  = strictjson.MsgSingle
)

// scanFrame is an open container during the syntax check.
type scanFrame struct {
	object bool
	keys   int                 // index of the frame's first key in scanner.keys
	set    map[string]struct{} // keys, once there are many
}

// scanner checks the syntax and duplicate keys of a whole body.
type scanner struct {
	data  []byte
	i     int
	stack []scanFrame
	keys  [][]byte // keys of the open objects, innermost last
	dup   []byte   // the first repeated key, once found
}

// scanBody checks data as the reflection-based decoder did, and returns
// the first top-level value (nil when there is none or it is cut short),
// whether anything follows it, and its nesting depth. Like the token walk
// it replaces, a body that simply ends between tokens is not a syntax
// error; the value it leaves unfinished is what fails to decode.
func scanBody(data []byte) (first []byte, more bool, depth int, err error) {
	s := scanner{data: data}
	for n := 0; ; n++ {
		s.ws()
		if s.i >= len(data) {
			return first, more, depth, nil
		}
		if n > 0 {
			more = true
		}
		start := s.i
		d, st := s.value()
		switch st {
		case scanSyntax:
			return nil, false, 0, invalid(msgNotJSON)
		case scanDup:
			return nil, false, 0, strictjson.Duplicate(string(s.dup))
		case scanNUL:
			return nil, false, 0, invalid(strictjson.MsgNUL)
		case scanSurrogate:
			return nil, false, 0, invalid(strictjson.MsgSurrogate)
		case scanCut:
			return first, more, depth, nil
		}
		if n == 0 {
			first, depth = data[start:s.i], d
		}
	}
}

// Outcomes of scanning a value.
const (
	scanDone   = iota
	scanCut    // the input ended between tokens
	scanSyntax // not JSON
	scanDup    // an object repeats a key (s.dup)
	// A string holds an escape the service refuses.
	scanNUL       // \u0000
	scanSurrogate // half a UTF-16 surrogate pair
)

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value scans one value and says how that went. The walk stops at the
// first syntax error or repeated key, whichever comes first in the input.
func (s *scanner) value() (maxDepth int, status int) {
	const (
		expectValue = iota
		afterValue
		expectKey
	)
	s.stack = s.stack[:0]
	s.keys = s.keys[:0]
	s.dup = nil
	mode := expectValue
	for {
		s.ws()
		if s.i >= len(s.data) {
			if mode == afterValue && len(s.stack) == 0 {
				return maxDepth, scanDone
			}
			return 0, scanCut
		}
		switch mode {
		case expectValue:
			switch c := s.data[s.i]; {
			case c == '{' || c == '[':
				s.i++
				s.stack = append(s.stack, scanFrame{object: c == '{', keys: len(s.keys)})
				maxDepth = max(maxDepth, len(s.stack))
				s.ws()
				if s.i < len(s.data) && s.data[s.i] == c+2 { // '}' or ']'
					s.i++
					s.pop()
					mode = afterValue
				} else if c == '{' {
					mode = expectKey
				}
			case c == '"':
				if _, st := s.str(); st != scanDone {
					return 0, st
				}
				mode = afterValue
			case c == '-' || (c >= '0' && c <= '9'):
				if !s.number() {
					return 0, scanSyntax
				}
				mode = afterValue
			case c == 't' || c == 'f' || c == 'n':
				if !s.literal() {
					return 0, scanSyntax
				}
				mode = afterValue
			default:
				return 0, scanSyntax
			}
		case afterValue:
			if len(s.stack) == 0 {
				return maxDepth, scanDone
			}
			top := &s.stack[len(s.stack)-1]
			switch c := s.data[s.i]; {
			case c == ',':
				s.i++
				if top.object {
					mode = expectKey
				} else {
					mode = expectValue
				}
			case top.object && c == '}', !top.object && c == ']':
				s.i++
				s.pop()
			default:
				return 0, scanSyntax
			}
		case expectKey:
			if s.data[s.i] != '"' {
				return 0, scanSyntax
			}
			raw, st := s.str()
			if st != scanDone {
				return 0, st
			}
			key := raw
			if needsUnquote(raw) {
				key = []byte(unquote(raw))
			}
			if s.seen(key) {
				s.dup = key
				return 0, scanDup
			}
			s.ws()
			if s.i >= len(s.data) {
				return 0, scanCut
			}
			if s.data[s.i] != ':' {
				return 0, scanSyntax
			}
			s.i++
			mode = expectValue
		}
	}
}

func (s *scanner) pop() {
	top := s.stack[len(s.stack)-1]
	s.keys = s.keys[:top.keys]
	s.stack = s.stack[:len(s.stack)-1]
}

// seen records key in the innermost object and reports a repeat.
func (s *scanner) seen(key []byte) bool {
	top := &s.stack[len(s.stack)-1]
	if top.set != nil {
		if _, dup := top.set[string(key)]; dup {
			return true
		}
		top.set[string(key)] = struct{}{}
		return false
	}
	keys := s.keys[top.keys:]
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	if len(keys) >= 16 {
		// Many keys: switch to a set so a huge object stays linear.
		top.set = make(map[string]struct{}, 2*len(keys))
		for _, k := range keys {
			top.set[string(k)] = struct{}{}
		}
		top.set[string(key)] = struct{}{}
		return false
	}
	s.keys = append(s.keys, key)
	return false
}

// str scans a string at s.i and returns its content without the quotes,
// and scanDone, scanSyntax, or (for a string that is valid JSON) the
// first escape the service refuses: scanNUL or scanSurrogate.
func (s *scanner) str() ([]byte, int) {
	start := s.i + 1
	bad := scanDone // the first refused escape (cmp.Or keeps it: scanDone is 0)
	high := false   // the previous escape was a high surrogate
	for i := start; i < len(s.data); i++ {
		c := s.data[i]
		if high && (c != '\\' || i+1 >= len(s.data) || s.data[i+1] != 'u') {
			high = false
			bad = cmp.Or(bad, scanSurrogate)
		}
		switch {
		case c == '"':
			s.i = i + 1
			return s.data[start:i], bad
		case c == '\\':
			i++
			if i >= len(s.data) {
				return nil, scanSyntax
			}
			switch s.data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.data) {
					return nil, scanSyntax
				}
				for _, h := range s.data[i+1 : i+5] {
					if !isHex(h) {
						return nil, scanSyntax
					}
				}
				r := getu4(s.data[i-1:])
				switch {
				case high:
					high = false
					if r < 0xDC00 || r > 0xDFFF {
						bad = cmp.Or(bad, scanSurrogate)
					}
				case r == 0:
					bad = cmp.Or(bad, scanNUL)
				case r >= 0xDC00 && r <= 0xDFFF:
					bad = cmp.Or(bad, scanSurrogate)
				case r >= 0xD800 && r <= 0xDBFF:
					high = true
				}
				i += 4
			default:
				return nil, scanSyntax
			}
		case c < 0x20:
			return nil, scanSyntax
		}
	}
	return nil, scanSyntax
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	d, i := s.data, s.i
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			return false
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			return false
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	s.i = i
	return true
}

func (s *scanner) literal() bool {
	for _, lit := range []string{"true", "false", "null"} {
		if len(s.data)-s.i >= len(lit) && string(s.data[s.i:s.i+len(lit)]) == lit {
			s.i += len(lit)
			return true
		}
	}
	return false
}

// needsUnquote reports whether string content differs from its decoded
// form: escapes, or bytes that are not plain printable ASCII.
func needsUnquote(s []byte) bool {
	for _, c := range s {
		if c == '\\' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// unquote decodes valid JSON string content like encoding/json does.
func unquote(s []byte) string {
	if !needsUnquote(s) {
		return string(s)
	}
	b := make([]byte, 0, len(s)+2*utf8.UTFMax)
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			r++
			switch s[r] {
			case '"', '\\', '/', '\'':
				b = append(b, s[r])
				r++
			case 'b':
				b = append(b, '\b')
				r++
			case 'f':
				b = append(b, '\f')
				r++
			case 'n':
				b = append(b, '\n')
				r++
			case 'r':
				b = append(b, '\r')
				r++
			case 't':
				b = append(b, '\t')
				r++
			case 'u':
				rr := getu4(s[r-1:])
				r += 5
				if utf16.IsSurrogate(rr) {
					rr1 := rune(-1)
					if r+6 <= len(s) {
						rr1 = getu4(s[r:])
					}
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						b = utf8.AppendRune(b, dec)
						break
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			if rr == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, unicode.ReplacementChar)
			} else {
				b = append(b, s[r:r+size]...)
			}
			r += size
		}
	}
	return string(b)
}

// getu4 decodes \uXXXX from the beginning of s, returning -1 if it is not
// one.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c = c - '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// cursor reads values already known to be valid JSON.
type cursor struct {
	d []byte
	i int
}

func (c *cursor) ws() {
	for c.i < len(c.d) {
		switch c.d[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// str reads a string at c.i and returns its raw content.
func (c *cursor) str() []byte {
	start := c.i + 1
	i := start
	for c.d[i] != '"' {
		if c.d[i] == '\\' {
			i++
		}
		i++
	}
	c.i = i + 1
	return c.d[start:i]
}

// skip reads over one value and returns its raw bytes.
func (c *cursor) skip() []byte {
	start := c.i
	depth := 0
	for {
		switch ch := c.d[c.i]; ch {
		case '"':
			c.str()
		case '{', '[':
			depth++
			c.i++
		case '}', ']':
			depth--
			c.i++
		case ',', ':', ' ', '\t', '\n', '\r':
			c.i++
		default: // number or literal
			c.i++
			for c.i < len(c.d) {
				ch := c.d[c.i]
				if ch == ',' || ch == '}' || ch == ']' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '"' || ch == '{' || ch == '[' {
					break
				}
				c.i++
			}
		}
		if depth == 0 {
			return c.d[start:c.i]
		}
	}
}

// object calls field for each key of the object at c.i, with the cursor
// on the value; field must read the value. The key is the raw content.
func (c *cursor) object(field func(key []byte)) {
	c.i++ // {
	c.ws()
	if c.d[c.i] == '}' {
		c.i++
		return
	}
	for {
		c.ws()
		key := c.str()
		c.ws()
		c.i++ // :
		c.ws()
		field(key)
		c.ws()
		if c.d[c.i] == ',' {
			c.i++
			continue
		}
		c.i++ // }
		return
	}
}

// array calls elem for each element, with the cursor on it; elem must
// read it.
func (c *cursor) array(elem func()) {
	c.i++ // [
	c.ws()
	if c.d[c.i] == ']' {
		c.i++
		return
	}
	for {
		c.ws()
		elem()
		c.ws()
		if c.d[c.i] == ',' {
			c.i++
			continue
		}
		c.i++ // ]
		return
	}
}

// kind is the first byte of the value at the cursor.
func (c *cursor) kind() byte { return c.d[c.i] }

// keyName is a raw key's name: the key itself unless it holds escapes.
func keyName(raw []byte) []byte {
	if needsUnquote(raw) {
		return []byte(unquote(raw))
	}
	return raw
}
