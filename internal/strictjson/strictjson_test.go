package strictjson_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"proxyusage/internal/apperr"
	"proxyusage/internal/strictjson"
)

type inner struct {
	Amount string `json:"amount"`
	Note   string `json:"note"`
}

type request struct {
	Name   *string                      `json:"name"`
	Count  int                          `json:"count"`
	Inner  *inner                       `json:"inner"`
	List   []inner                      `json:"list"`
	Free   map[string]int               `json:"free"`
	Raw    json.RawMessage              `json:"raw"`
	Opt    strictjson.Nullable[inner]   `json:"opt"`
	Hidden string                       `json:"-"`
	Plain  string                       // no tag: its Go name
	Nested strictjson.Nullable[[]inner] `json:"nested"`
}

type validated struct {
	N int `json:"n"`
}

func (v *validated) Validate() error {
	if v.N < 0 {
		return apperr.Errorf(apperr.Invalid, "n must not be negative")
	}
	return nil
}

func message(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code != apperr.Invalid {
		t.Fatalf("not an INVALID_REQUEST: %v", err)
	}
	return ae.Message
}

func TestDecodeRules(t *testing.T) {
	for _, tc := range []struct {
		body, want string // want "" = accepted
	}{
		{`{"name":"x","count":1,"inner":{"amount":"1"},"list":[{"note":"n"}],"free":{"ANY":1,"any":2},"raw":{"X":1,"x":[1]},"Plain":"p"}`, ""},
		{`{"name":"\u0078","opt":null,"nested":[{"amount":"2"}]}`, ""},
		{`{"\u006eame":"x"}`, ""},    // the same name, escaped
		{`{"name":"a\\u0000b"}`, ""}, // an escaped backslash, not a NUL
		{`{"name":"\ud83d\ude00"}`, ""},
		{`{"NAME":"x"}`, `unknown member "NAME" (member names are case-sensitive)`},
		{`{"name":"x","Name":"y"}`, `unknown member "Name" (member names are case-sensitive)`},
		{`{"inner":{"Amount":"1"}}`, `unknown member "inner.Amount" (member names are case-sensitive)`},
		{`{"list":[{"amount":"1"},{"amount":"1","x":1}]}`, `unknown member "list.x" (member names are case-sensitive)`},
		{`{"opt":{"amount":"1","AMOUNT":"2"}}`, `unknown member "opt.AMOUNT" (member names are case-sensitive)`},
		{`{"nested":[{"y":1}]}`, `unknown member "nested.y" (member names are case-sensitive)`},
		{`{"plain":"p"}`, `unknown member "plain" (member names are case-sensitive)`},
		{`{"Hidden":"h"}`, `unknown member "Hidden" (member names are case-sensitive)`},
		{`{"-":"h"}`, `unknown member "-" (member names are case-sensitive)`},
		{`{"name":"x","name":"y"}`, `duplicate key "name"`},
		{`{"name":"x","\u006eame":"y"}`, `duplicate key "name"`},
		{`{"raw":{"a":1,"a":2}}`, `duplicate key "a"`},
		{`{"name":"a\u0000b"}`, strictjson.MsgNUL},
		{`{"na\u0000me":"x"}`, strictjson.MsgNUL},
		{`{"raw":["\u0000"]}`, strictjson.MsgNUL},
		{`{"name":"\ud800"}`, strictjson.MsgSurrogate},
		{`{"name":"\ud800\u0041"}`, strictjson.MsgSurrogate},
		{`{"name":"\udc00\ud800"}`, strictjson.MsgSurrogate},
		{`{"name":"a` + "\xff" + `"}`, strictjson.MsgNotUTF8},
		{`{"name":"x"} {}`, strictjson.MsgSingle},
		{`{"name":"x"} x`, strictjson.MsgNotJSON},
		{`{"name":"x",}`, strictjson.MsgNotJSON},
		{`{"NAME":1,"a":1,"a":2}`, `duplicate key "a"`}, // body rules before names
		{`{"NAME":1} x`, strictjson.MsgNotJSON},
		{`{"NAME":1`, strictjson.MsgShape}, // cut short
		{``, strictjson.MsgShape},
		{`null`, strictjson.MsgShape},
		{`[]`, strictjson.MsgShape},
		{`{"count":"1"}`, `count has the wrong type`},
		{`{"count":"1","NAME":1}`, `unknown member "NAME" (member names are case-sensitive)`},
		{`{"inner":{"amount":1}}`, `inner.amount has the wrong type`},
		{`{"inner":[{"AMOUNT":1}]}`, `inner has the wrong type`}, // no names checked inside a wrong type
		{`{"free":{"a":"x"}}`, `free has the wrong type`},
		{strings.Repeat(`{"raw":`, 10001) + `1` + strings.Repeat(`}`, 10001), strictjson.MsgShape},
	} {
		var r request
		if got := message(t, strictjson.Decode([]byte(tc.body), &r)); got != tc.want {
			t.Errorf("Decode(%.80s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestDecodeValues(t *testing.T) {
	var r request
	if err := strictjson.Decode([]byte(`{"name":"x","opt":{"amount":"5"},"nested":null}`), &r); err != nil {
		t.Fatal(err)
	}
	if *r.Name != "x" || !r.Opt.Set || r.Opt.Null || r.Opt.Value.Amount != "5" || !r.Nested.Set || !r.Nested.Null {
		t.Fatalf("decoded %+v", r)
	}
	r = request{}
	if err := strictjson.Decode([]byte(`{}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Opt.Set || r.Nested.Set {
		t.Fatalf("absent members marked present: %+v", r)
	}
}

func TestDecodeValidates(t *testing.T) {
	var v validated
	if got := message(t, strictjson.Decode([]byte(`{"n":-1}`), &v)); got != "n must not be negative" {
		t.Fatalf("Validate not applied: %q", got)
	}
	if got := message(t, strictjson.Decode([]byte(`{"N":-1}`), &v)); !strings.HasPrefix(got, "unknown member") {
		t.Fatalf("case variant: %q", got)
	}
	if err := strictjson.Decode([]byte(`{"n":1}`), &v); err != nil || v.N != 1 {
		t.Fatalf("valid body: %v %+v", err, v)
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	got := strictjson.Truncate(long)
	if len(got) > 64 || !strings.HasPrefix(long, got) || !json.Valid([]byte(`"`+got+`"`)) {
		t.Fatalf("Truncate = %q", got)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"name":"x","inner":{"amount":"1"}}`, `{"NAME":1}`, `{"a":1,"a":2}`, `{"name":"\ud800"}`, `{"opt":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r request
		err := strictjson.Decode(body, &r)
		if err != nil {
			message(t, err)
			return
		}
		// Accepted: encoding/json reads the same, and every name was exact.
		var loose map[string]json.RawMessage
		if json.Unmarshal(body, &loose) != nil {
			t.Fatalf("accepted %q that encoding/json refuses as an object", body)
		}
		for k := range loose {
			switch k {
			case "name", "count", "inner", "list", "free", "raw", "opt", "Plain", "nested":
			default:
				t.Fatalf("accepted unknown name %q", k)
			}
		}
	})
}
