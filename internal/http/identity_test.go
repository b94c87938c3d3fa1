package http_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// signPayload signs payload, byte for byte, as an HS256 token with the
// test secret: jwt.MapClaims cannot express duplicate or case-variant
// claim names, nor invalid UTF-8.
func signPayload(t *testing.T, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(signing, []byte(apptest.Secret))
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// Claim names match exactly (case-sensitive), a repeated claim name is
// refused, and sub follows the user id rule: the confusable payloads below
// were accepted (and the NUL sub answered 500) when claims were decoded
// with encoding/json's case-insensitive field matching.
func TestConfusableClaims(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		exp := time.Now().Add(time.Hour).Unix()
		past := time.Now().Add(-time.Hour).Unix()
		report := "/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-01"
		// whoami answers the user id a token stands for.
		whoami := func(t *testing.T, tok string) string {
			t.Helper()
			r := env.Do("GET", report, tok, nil)
			if r.Status != 200 {
				t.Fatalf("valid token refused: %d %s", r.Status, r.Body)
			}
			return r.JSON(t)["userId"].(string)
		}

		// Roles is not roles: mallory is a plain user.
		mallory := signPayload(t, fmt.Sprintf(`{"sub":"mallory","Roles":["admin"],"exp":%d}`, exp))
		env.Do("GET", "/admin/users/alice", mallory, nil).ExpectError(t, 403, "PROXY_USAGE_005")
		env.Do("PUT", "/admin/users/mallory", mallory, `{"tier":"enterprise"}`).ExpectError(t, 403, "PROXY_USAGE_005")
		env.Do("GET", report+"&userId=bob", mallory, nil).ExpectError(t, 403, "PROXY_USAGE_005")
		// The exact name grants the role (the test can tell the difference).
		admin := signPayload(t, fmt.Sprintf(`{"sub":"root","roles":["admin"],"exp":%d}`, exp))
		env.Do("GET", "/admin/users/nobody", admin, nil).ExpectError(t, 404, "PROXY_USAGE_006")

		// SUB is not sub, in either order.
		for _, p := range []string{`{"sub":"alice","SUB":"bob","exp":%d}`, `{"SUB":"bob","sub":"alice","exp":%d}`, `{"sub":"alice","Sub":"bob","sUB":"carol","exp":%d}`} {
			if got := whoami(t, signPayload(t, fmt.Sprintf(p, exp))); got != "alice" {
				t.Errorf("%s is %q, want alice", p, got)
			}
		}

		refused := map[string]string{
			// EXP is not exp: the token expired, or has no exp at all.
			"EXP after exp":  fmt.Sprintf(`{"sub":"alice","exp":%d,"EXP":%d}`, past, exp),
			"EXP before exp": fmt.Sprintf(`{"sub":"alice","EXP":%d,"exp":%d}`, exp, past),
			"only EXP":       fmt.Sprintf(`{"sub":"alice","EXP":%d}`, exp),
			"only Sub":       fmt.Sprintf(`{"Sub":"alice","exp":%d}`, exp),
			// Repeated names, also when spelt with escapes.
			"duplicate sub":         fmt.Sprintf(`{"sub":"alice","sub":"bob","exp":%d}`, exp),
			"duplicate same sub":    fmt.Sprintf(`{"sub":"alice","sub":"alice","exp":%d}`, exp),
			"duplicate escaped sub": fmt.Sprintf(`{"sub":"alice","s\u0075b":"bob","exp":%d}`, exp),
			"duplicate exp":         fmt.Sprintf(`{"sub":"alice","exp":%d,"exp":%d}`, past, exp),
			"duplicate roles":       fmt.Sprintf(`{"sub":"alice","roles":[],"roles":["admin"],"exp":%d}`, exp),
			"duplicate unknown":     fmt.Sprintf(`{"sub":"alice","x":1,"x":2,"exp":%d}`, exp),
			// sub breaks the user id rule.
			"sub with NUL":          fmt.Sprintf(`{"sub":"a\u0000b","exp":%d}`, exp),
			"sub with BEL":          fmt.Sprintf(`{"sub":"a\u0007b","exp":%d}`, exp),
			"sub with newline":      fmt.Sprintf(`{"sub":"alice\n","exp":%d}`, exp),
			"sub with DEL":          fmt.Sprintf(`{"sub":"a\u007fb","exp":%d}`, exp),
			"sub with C1 control":   fmt.Sprintf(`{"sub":"a\u0085b","exp":%d}`, exp),
			"sub of 257 characters": fmt.Sprintf(`{"sub":"%s","exp":%d}`, strings.Repeat("x", 257), exp),
			"sub of 257 é":          fmt.Sprintf(`{"sub":"%s","exp":%d}`, strings.Repeat("é", 257), exp),
			"sub invalid UTF-8":     fmt.Sprintf("{\"sub\":\"a\xffb\",\"exp\":%d}", exp),
			"sub lone surrogate":    fmt.Sprintf(`{"sub":"a\ud800b","exp":%d}`, exp),
			"sub not a string":      fmt.Sprintf(`{"sub":42,"exp":%d}`, exp),
			"invalid UTF-8 outside": fmt.Sprintf("{\"sub\":\"alice\",\"note\":\"\xc3\",\"exp\":%d}", exp),
			"trailing data":         fmt.Sprintf(`{"sub":"alice","exp":%d} {}`, exp),
		}
		for name, payload := range refused {
			t.Run(name, func(t *testing.T) {
				tok := signPayload(t, payload)
				for _, path := range []string{"/proxies", report} {
					r := env.Do("GET", path, tok, nil)
					r.ExpectError(t, 401, "PROXY_USAGE_004")
					onlyErrorFields(t, r)
				}
			})
		}
		// Characters, not bytes: 256 two-byte characters is a valid sub, and
		// so is any printable Unicode.
		for _, sub := range []string{strings.Repeat("é", 256), "ünïcode 😀 user", `with "quotes" and \ backslash`} {
			tok := apptest.Token(t, sub)
			if got := whoami(t, tok); got != sub {
				t.Errorf("sub %q answered as %q", sub, got)
			}
		}
		// A surrogate pair is one character, not a lone half.
		if got := whoami(t, signPayload(t, fmt.Sprintf(`{"sub":"pair-\ud83d\ude00","exp":%d}`, exp))); got != "pair-😀" {
			t.Errorf("surrogate pair sub = %q", got)
		}
		// Refused tokens created no user.
		if n := env.Count(`SELECT count(*) FROM users WHERE id NOT IN ('alice', 'root') AND id NOT LIKE 'é%' AND id NOT LIKE 'ü%' AND id NOT LIKE 'with%' AND id NOT LIKE 'pair-%'`); n != 1 {
			t.Fatalf("%d unexpected users (want only mallory)", n)
		}
	})
}

// A userId in a query, path or body follows the same rule as sub: 400,
// never a 500 (NUL, invalid UTF-8) nor a 200 (over-long, where billing
// used to skip the length check).
func TestUserIDRule(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		admin := apptest.Token(t, "root", "admin")
		alice := apptest.Token(t, "alice")
		period := "periodStart=2026-01-01&periodEnd=2026-01-02"
		// query: as sent in a query or path (percent-encoded); json: the
		// same id as a JSON string in a body, where JSON can spell it
		// (invalid UTF-8 in a body is refused as a body, not as an id).
		bad := map[string]struct{ query, json string }{
			"NUL":                   {"a%00b", `a\u0000b`},
			"invalid UTF-8":         {"a%FFb", ""},
			"control":               {"a%07b", `a\u0007b`},
			"C1 control":            {"a%C2%85b", `a\u0085b`},
			"300 characters":        {strings.Repeat("x", 300), strings.Repeat("x", 300)},
			"257 characters":        {strings.Repeat("%C3%A9", 257), strings.Repeat("é", 257)},
			"UTF-8 surrogate":       {"a%ED%A0%80b", ""},
			"truncated UTF-8":       {"a%C3", ""},
			"overlong UTF-8 of '/'": {"%C0%AF", ""},
		}
		for name, id := range bad {
			t.Run(name, func(t *testing.T) {
				for _, tok := range []string{admin, alice} {
					for _, path := range []string{
						"/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-02&userId=" + id.query,
						"/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-02&format=csv&userId=" + id.query,
						"/proxy/usage/aggregation?" + period + "&userId=" + id.query,
						"/proxy/usage/billing?" + period + "&userId=" + id.query,
					} {
						r := env.Do("GET", path, tok, nil)
						r.ExpectError(t, 400, "PROXY_USAGE_001")
						onlyErrorFields(t, r)
					}
					if id.json != "" {
						r := env.Do("POST", "/proxy/usage/aggregate", tok, `{"periodStart":"2026-01-01","periodEnd":"2026-01-02","userId":"`+id.json+`"}`)
						r.ExpectError(t, 400, "PROXY_USAGE_001")
					}
				}
				env.Do("GET", "/admin/users/"+id.query, admin, nil).ExpectError(t, 400, "PROXY_USAGE_001")
				env.Do("PUT", "/admin/users/"+id.query, admin, `{"tier":"premium"}`).ExpectError(t, 400, "PROXY_USAGE_001")
				// A plain user is still refused the admin endpoint first.
				env.Do("GET", "/admin/users/"+id.query, alice, nil).ExpectError(t, 403, "PROXY_USAGE_005")
			})
		}
		if n := env.Count(`SELECT count(*) FROM users WHERE id NOT IN ('root', 'alice')`); n != 0 {
			t.Fatalf("refused user ids stored %d users", n)
		}
		if n := env.Count(`SELECT count(*) FROM proxy_usage_aggregation`); n != 0 {
			t.Fatalf("refused user ids stored %d snapshots", n)
		}

		// The longest valid id, in characters, works everywhere.
		long := strings.Repeat("é", 256)
		longQ := strings.Repeat("%C3%A9", 256)
		if r := env.Do("PUT", "/admin/users/"+longQ, admin, `{"tier":"premium"}`); r.Status != 200 {
			t.Fatalf("PUT a 256-character id: %d %s", r.Status, r.Body)
		}
		for _, path := range []string{
			"/admin/users/" + longQ,
			"/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-02&userId=" + longQ,
			"/proxy/usage/aggregation?" + period + "&userId=" + longQ,
			"/proxy/usage/billing?" + period + "&userId=" + longQ,
		} {
			r := env.Do("GET", path, admin, nil)
			if r.Status != 200 || r.JSON(t)["userId"] != long {
				t.Fatalf("GET %s: %d %.200s", path, r.Status, r.Body)
			}
		}
		r := env.Do("POST", "/proxy/usage/aggregate", admin, `{"periodStart":"2026-01-01","periodEnd":"2026-01-02","userId":"`+long+`"}`)
		if r.Status != 200 {
			t.Fatalf("aggregate for a 256-character id: %d %s", r.Status, r.Body)
		}
	})
}

// An admin snapshot for a user that does not exist is 404, not a
// foreign-key 500, and stores nothing.
func TestAggregateUnknownUser(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		admin := apptest.Token(t, "root", "admin")
		body := `{"periodStart":"2026-01-01","periodEnd":"2026-01-02","userId":"nobody"}`
		r := env.Do("POST", "/proxy/usage/aggregate", admin, body)
		r.ExpectError(t, 404, "PROXY_USAGE_006")
		onlyErrorFields(t, r)
		if n := env.Count(`SELECT count(*) FROM proxy_usage_aggregation`); n != 0 {
			t.Fatalf("stored %d snapshots", n)
		}
		if n := env.Count(`SELECT count(*) FROM users WHERE id = 'nobody'`); n != 0 {
			t.Fatal("the snapshot created the user")
		}
		// Once the user exists (here: created by an admin), the same call works.
		if r := env.Do("PUT", "/admin/users/nobody", admin, `{"tier":"premium"}`); r.Status != 200 {
			t.Fatalf("create nobody: %d %s", r.Status, r.Body)
		}
		if r := env.Do("POST", "/proxy/usage/aggregate", admin, body); r.Status != 200 || !strings.Contains(string(r.Body), `"userId":"nobody"`) {
			t.Fatalf("aggregate for a known user: %d %s", r.Status, r.Body)
		}
	})
}
