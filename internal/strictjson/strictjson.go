// Package strictjson decodes request bodies by the service's JSON rules, the
// same for every endpoint:
//
//   - the body is valid UTF-8 and exactly one JSON value (no trailing data);
//   - no object repeats a member name, at any depth;
//   - no string holds NUL (\u0000) or half a UTF-16 surrogate pair (\ud800
//     alone), which would be stored as something other than what was sent;
//   - every member name is one the target type declares, matched exactly:
//     case-sensitively, so "EVENTTYPE" is an unknown name, not "eventType";
//   - a struct target needs a JSON object, not null;
//   - the decoded value passes its Validate method, when it has one.
//
// encoding/json alone matches names case-insensitively, lets the last of two
// duplicates win and ignores unknown names, so a body could mean something
// other than what a reader (or an auditor, or another decoder) sees in it.
// Decode checks the rules first and only then hands the body to
// encoding/json, which, given exact and unique names, can no longer pick a
// different member than the one written.
//
// Every error is an *apperr.Error with code Invalid; the rules are checked
// in a fixed order so the same body always gets the same message: UTF-8,
// then the first syntax error, duplicate, NUL or lone surrogate in document
// order (anywhere in the body), then the first unknown name, then the first
// member of the wrong type, then trailing data, then Validate.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"

	"proxyusage/internal/apperr"
)

// Messages of the body-level rules, shared with the hand-written event
// decoder (internal/ingest) so both answer a body the same way.
const (
	MsgNotUTF8   = "body must be UTF-8 encoded JSON"
	MsgNotJSON   = "body is not valid JSON"
	MsgShape     = "body must be a JSON object of the documented shape"
	MsgSingle    = "body must hold a single JSON value"
	MsgNUL       = `body must not contain NUL (\u0000) in any string`
	MsgSurrogate = `body holds a \u escape of half a UTF-16 surrogate pair, which is not a character`
)

// MaxDepth is the deepest nesting a value may have (encoding/json's limit).
const MaxDepth = 10000

// maxNameInMessage bounds how much of a member name an error repeats.
const maxNameInMessage = 64

// Duplicate is the error for an object that repeats the member name.
func Duplicate(name string) error {
	return apperr.Errorf(apperr.Invalid, "duplicate key %q", Truncate(name))
}

// Unknown is the error for a member name the shape does not have; path is
// the dotted name from the body's root (e.g. "eventData.BytesSent").
func Unknown(path string) error {
	return apperr.Errorf(apperr.Invalid, "unknown member %q (member names are case-sensitive)", Truncate(path))
}

// WrongType is the error for a member holding the wrong JSON type.
func WrongType(path string) error {
	return apperr.Errorf(apperr.Invalid, "%s has the wrong type", path)
}

// Truncate shortens a name for an error message, on a character boundary.
func Truncate(s string) string {
	if len(s) <= maxNameInMessage {
		return s
	}
	n := maxNameInMessage
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func invalid(msg string) error { return apperr.Errorf(apperr.Invalid, "%s", msg) }

// Validator is a decoded request that checks its own rules.
type Validator interface {
	Validate() error
}

// Decode decodes data into v, a non-nil pointer, by the package's rules.
func Decode(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictjson: Decode needs a non-nil pointer")
	}
	target := rv.Type().Elem()
	if !utf8.Valid(data) {
		return invalid(MsgNotUTF8)
	}
	first, err := walk(data, target)
	if err != nil {
		return err
	}
	if first == firstNull && deref(target).Kind() == reflect.Struct {
		return invalid(MsgShape)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return WrongType(typeErr.Field)
		}
		var ae *apperr.Error
		if errors.As(err, &ae) {
			return ae // from a member's own UnmarshalJSON
		}
		return invalid(MsgShape)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid(MsgSingle)
	}
	if val, ok := v.(Validator); ok {
		return val.Validate()
	}
	return nil
}

// What the first value of a body was, as far as Decode cares.
const (
	firstOther = iota
	firstNull
)

// frame is an open object or array during the walk.
type frame struct {
	object bool
	names  map[string]struct{}
	schema *schema // checks member names (objects) or elements; nil: unchecked
	path   string
	// Objects: whether the next token is a name, and the schema and path
	// of the value after the current name.
	wantName   bool
	nextSchema *schema
	nextPath   string
}

// walk reads every token of data. It returns the first syntax error,
// duplicate, NUL or lone surrogate in document order; failing those, the
// first unknown member name of the first value (checked against target,
// nil: not checked). Like encoding/json's token stream, a body that simply
// ends between tokens is not an error here; the value it leaves unfinished
// fails to decode later.
func walk(data []byte, target reflect.Type) (first int, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var (
		stack     []*frame
		unknown   error // first unknown name in the first value
		values    int   // top-level values started
		depth     int   // deepest nesting of the first value
		firstDone bool
		root      = schemaOf(target)
	)
	first = firstOther
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return first, invalid(MsgNotJSON)
		}
		if s, ok := tok.(string); ok {
			if msg := badEscape(data[start:dec.InputOffset()]); msg != "" {
				return first, invalid(msg)
			}
			if top := top(stack); top != nil && top.object && top.wantName {
				if _, dup := top.names[s]; dup {
					return first, Duplicate(s)
				}
				top.names[s] = struct{}{}
				top.wantName = false
				top.nextPath = join(top.path, s)
				top.nextSchema = nil
				if top.schema != nil {
					next, known := top.schema.member(s)
					if !known && unknown == nil && values == 1 {
						unknown = Unknown(top.nextPath)
					}
					top.nextSchema = next
				}
				continue
			}
		}
		// A value (or the end of one) at the current position.
		var sch *schema
		var path string
		parent := top(stack)
		switch {
		case parent == nil: // a top-level value starts
			sch, path = root, ""
			values++
			if values == 1 && tok == nil {
				first = firstNull
			}
		case parent.object:
			sch, path = parent.nextSchema, parent.nextPath
		default:
			sch, path = parent.schema.elem(), parent.path
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, &frame{object: true, names: map[string]struct{}{}, schema: sch.objectSchema(), path: path, wantName: true})
			case '[':
				stack = append(stack, &frame{schema: sch.arraySchema(), path: path})
			default:
				stack = stack[:len(stack)-1]
			}
			if values == 1 && !firstDone {
				depth = max(depth, len(stack))
			}
		}
		if len(stack) == 0 && values >= 1 {
			firstDone = true
		}
		if p := top(stack); p != nil && p.object {
			// A value finished (or an object opened and is now the top):
			// an object at the top expects a name next.
			if d, ok := tok.(json.Delim); !ok || d == '}' || d == ']' {
				p.wantName = true
			}
		}
	}
	if firstDone && depth <= MaxDepth && unknown != nil {
		return first, unknown
	}
	return first, nil
}

func top(stack []*frame) *frame {
	if len(stack) == 0 {
		return nil
	}
	return stack[len(stack)-1]
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// badEscape looks at the raw text of one string token (possibly preceded
// by separators, which hold no backslash) for \u escapes the service will
// not take, and names the rule broken ("" if none).
func badEscape(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return ""
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped character; the token is valid JSON
		if raw[i] != 'u' {
			continue
		}
		r := hex4(raw[i+1:])
		i += 4
		switch {
		case r == 0:
			return MsgNUL
		case r >= 0xDC00 && r <= 0xDFFF:
			return MsgSurrogate
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if lo := hex4(raw[i+3:]); lo >= 0xDC00 && lo <= 0xDFFF {
					i += 6
					continue
				}
			}
			return MsgSurrogate
		}
	}
	return ""
}

// hex4 decodes four hex digits (known valid).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// schema is what the walk knows of a target type: the member names of a
// struct, the value type of a map, the element type of a slice. A nil
// *schema checks nothing (free-form or opaque values, and values of the
// wrong JSON type, which decoding reports).
type schema struct {
	t       reflect.Type // dereferenced
	members map[string]reflect.Type
}

var (
	schemaCache     sync.Map // reflect.Type → *schema
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
	hookType        = reflect.TypeFor[schemaHook]()
)

// schemaHook lets a type that decodes itself (Nullable) have its content
// checked as another type.
type schemaHook interface{ strictSchema() reflect.Type }

// Nullable is a member that may be absent, null or a value, three cases a
// pointer cannot tell apart (e.g. "contract": null removes a contract,
// an absent contract keeps it). Its content follows the rules of T.
type Nullable[T any] struct {
	Set   bool // the member was present
	Null  bool // ... as null
	Value T    // ... otherwise, its value
}

// UnmarshalJSON records presence; Decode has already checked the names.
func (n *Nullable[T]) UnmarshalJSON(b []byte) error {
	n.Set = true
	if string(b) == "null" {
		n.Null = true
		return nil
	}
	return json.Unmarshal(b, &n.Value)
}

func (Nullable[T]) strictSchema() reflect.Type { return reflect.TypeFor[T]() }

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// schemaOf returns the schema of t, nil when its content is not checked:
// types that decode themselves (json.RawMessage, custom UnmarshalJSON),
// interfaces and scalars.
func schemaOf(t reflect.Type) *schema {
	t = deref(t)
	if t == nil {
		return nil
	}
	if s, ok := schemaCache.Load(t); ok {
		return s.(*schema)
	}
	if t.Implements(hookType) {
		return schemaOf(reflect.Zero(t).Interface().(schemaHook).strictSchema())
	}
	p := reflect.PointerTo(t)
	if t.Implements(unmarshalerType) || p.Implements(unmarshalerType) || p.Implements(textType) {
		return nil
	}
	var s *schema
	switch t.Kind() {
	case reflect.Struct:
		s = &schema{t: t, members: map[string]reflect.Type{}}
		addFields(s.members, t)
	case reflect.Map, reflect.Slice, reflect.Array:
		s = &schema{t: t}
	default:
		return nil
	}
	schemaCache.Store(t, s)
	return s
}

// addFields adds the JSON names of t's fields as encoding/json sees them:
// the tag's name, else the field's; "-" and unexported fields are skipped,
// embedded structs without a tag lend their fields.
func addFields(m map[string]reflect.Type, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			if ft := deref(f.Type); ft.Kind() == reflect.Struct {
				addFields(m, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
}

// member reports the schema of a member's value and whether the name is
// one the object may have.
func (s *schema) member(name string) (*schema, bool) {
	switch s.t.Kind() {
	case reflect.Struct:
		t, ok := s.members[name]
		if !ok {
			return nil, false
		}
		return schemaOf(t), true
	case reflect.Map:
		return schemaOf(s.t.Elem()), true
	}
	return nil, true
}

// objectSchema is the schema for an object in this place: a struct's or a
// map's, nil for anything else (a type error decoding reports).
func (s *schema) objectSchema() *schema {
	if s == nil {
		return nil
	}
	switch s.t.Kind() {
	case reflect.Struct:
		return s
	case reflect.Map:
		if s.t.Key().Kind() == reflect.String {
			return s
		}
	}
	return nil
}

// arraySchema is the schema for an array in this place.
func (s *schema) arraySchema() *schema {
	if s == nil || (s.t.Kind() != reflect.Slice && s.t.Kind() != reflect.Array) {
		return nil
	}
	return s
}

// elem is the schema of an array's elements.
func (s *schema) elem() *schema {
	if s == nil {
		return nil
	}
	return schemaOf(s.t.Elem())
}
