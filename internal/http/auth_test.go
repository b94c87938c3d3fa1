package http_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

func sign(t *testing.T, claims jwt.MapClaims, key []byte) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthentication(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, func(m *app.Main) { m.Config.JWTIssuer = "https://issuer.test"; m.Config.JWTAudience = "proxyusage" })
		key := []byte(apptest.Secret)
		now := time.Now()
		good := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "iss": "https://issuer.test", "aud": "proxyusage"}
		with := func(k string, v any) jwt.MapClaims {
			c := jwt.MapClaims{}
			for kk, vv := range good {
				c[kk] = vv
			}
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
			return c
		}
		unsigned := func(claims jwt.MapClaims) string {
			s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, good).SignedString(key)
		validTok := sign(t, good, key)
		tampered := validTok[:strings.LastIndex(validTok, ".")] + "." + base64.RawURLEncoding.EncodeToString([]byte("not the signature"))

		bad := map[string]string{
			"garbled":         "not-a-jwt",
			"wrong signature": sign(t, good, []byte("another-secret-0123456789abcdef0123")),
			"tampered":        tampered,
			"alg none":        unsigned(good),
			"other HS alg":    hs512,
			"expired":         sign(t, with("exp", now.Add(-time.Hour).Unix()), key),
			"no exp":          sign(t, with("exp", nil), key),
			"not yet valid":   sign(t, with("nbf", now.Add(time.Hour).Unix()), key),
			"wrong issuer":    sign(t, with("iss", "https://evil.test"), key),
			"no issuer":       sign(t, with("iss", nil), key),
			"wrong audience":  sign(t, with("aud", "other"), key),
			"no sub":          sign(t, with("sub", nil), key),
			"empty sub":       sign(t, with("sub", ""), key),
		}
		routes := []struct{ method, path string }{
			{"GET", "/proxies"}, {"PUT", "/proxies/p1"}, {"DELETE", "/proxies/p1"},
			{"POST", "/proxy/usage/p1/record"}, {"POST", "/proxy/usage/events"},
		}
		for name, tok := range bad {
			for _, rt := range routes {
				t.Run(name+" "+rt.method+" "+rt.path, func(t *testing.T) {
					m := env.Do(rt.method, rt.path, tok, `{}`).ExpectError(t, 401, "PROXY_USAGE_004")
					if strings.Contains(m["message"].(string), tok) {
						t.Fatal("token echoed in the error")
					}
				})
			}
		}
		// Missing header and wrong scheme.
		env.Do("GET", "/proxies", "", nil).ExpectError(t, 401, "PROXY_USAGE_004")
		req, _ := http.NewRequest("GET", env.URL+"/proxies", nil)
		req.Header.Set("Authorization", "Basic "+validTok)
		env.Send(req).ExpectError(t, 401, "PROXY_USAGE_004")

		// Audience as an array, and the valid token, pass.
		for _, tok := range []string{validTok, sign(t, with("aud", []string{"x", "proxyusage"}), key)} {
			if r := env.Do("GET", "/proxies", tok, nil); r.Status != 200 {
				t.Fatalf("valid token refused: %d %s", r.Status, r.Body)
			}
		}
		// First use created the user row with no tier history (free).
		if n := env.Count(`SELECT count(*) FROM users WHERE id = 'alice'`); n != 1 {
			t.Fatal("user not created on first use")
		}
		if n := env.Count(`SELECT count(*) FROM proxies`); n != 0 {
			t.Fatal("refused requests stored proxies")
		}
		// Health, readiness and metrics need no token.
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			if r := env.Do("GET", p, "", nil); r.Status != 200 {
				t.Fatalf("%s: %d %s", p, r.Status, r.Body)
			}
		}
	})
}

func TestCorrelationIDAndRouterErrors(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	req, _ := http.NewRequest("GET", env.URL+"/no/such/route", nil)
	req.Header.Set("X-Correlation-ID", "abc-123")
	r := env.Send(req)
	m := r.ExpectError(t, 404, "PROXY_USAGE_006")
	if m["correlationId"] != "abc-123" || r.Header.Get("X-Correlation-ID") != "abc-123" {
		t.Fatalf("correlation id not echoed: %v %v", m["correlationId"], r.Header)
	}
	req, _ = http.NewRequest("GET", env.URL+"/healthz", nil)
	req.Header.Set("X-Request-ID", "req-9")
	if r := env.Send(req); r.Header.Get("X-Correlation-ID") != "req-9" {
		t.Fatal("X-Request-ID not used")
	}
	// A generated one when none (or an unusable one) is sent.
	req, _ = http.NewRequest("GET", env.URL+"/healthz", nil)
	req.Header.Set("X-Correlation-ID", "bad id\twith spaces")
	if id := env.Send(req).Header.Get("X-Correlation-ID"); id == "" || strings.Contains(id, " ") {
		t.Fatalf("generated id = %q", id)
	}
	// Method not allowed goes through the same error body.
	env.Do("PATCH", "/proxies/p1", apptest.Token(t, "alice"), nil).ExpectError(t, 400, "PROXY_USAGE_001")
}
