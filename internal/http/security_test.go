package http_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

type endpoint struct {
	method, path string
	body         string
	admin        bool // admin-only route
	proxy        bool // addresses alice's proxy p1
}

var endpoints = []endpoint{
	{method: "GET", path: "/proxies"},
	{method: "PUT", path: "/proxies/p1", body: `{"name":"x"}`, proxy: true},
	{method: "DELETE", path: "/proxies/p1", proxy: true},
	{method: "POST", path: "/proxy/usage/p1/record", body: `{"eventType":"error"}`, proxy: true},
	{method: "POST", path: "/proxy/usage/events", body: `{"events":[{"proxyId":"p1","eventType":"error"}]}`, proxy: true},
	{method: "GET", path: "/proxy/usage/p1/metrics/2026-01-01", proxy: true},
	{method: "GET", path: "/proxy/usage/p1/metrics?startDate=2026-01-01&endDate=2026-01-02", proxy: true},
	{method: "GET", path: "/proxy/usage/p1/summary", proxy: true},
	{method: "GET", path: "/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-02"},
	{method: "GET", path: "/proxy/usage/aggregation?periodStart=2026-01-01&periodEnd=2026-01-02"},
	{method: "POST", path: "/proxy/usage/aggregate", body: `{"periodStart":"2026-01-01","periodEnd":"2026-01-02"}`},
	{method: "GET", path: "/proxy/usage/billing?periodStart=2026-01-01&periodEnd=2026-01-02"},
	{method: "PUT", path: "/admin/users/alice", body: `{"tier":"premium"}`, admin: true},
	{method: "GET", path: "/admin/users/alice", admin: true},
	{method: "GET", path: "/proxy/usage/aggregation?periodStart=2026-01-01&periodEnd=2026-01-02&groupBy=tier", admin: true},
}

// onlyErrorFields asserts an error body carries nothing but the documented fields.
func onlyErrorFields(t *testing.T, r apptest.Response) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("error body is not JSON: %s", r.Body)
	}
	for k := range m {
		switch k {
		case "error", "code", "message", "status", "correlationId", "index":
		default:
			t.Fatalf("error body leaks %q: %s", k, r.Body)
		}
	}
	for _, leak := range []string{"alice", "pgx", "SQLSTATE", "panic", "goroutine", "usage_events"} {
		if strings.Contains(m["message"].(string), leak) {
			t.Fatalf("error message leaks %q: %s", leak, r.Body)
		}
	}
}

func TestSecurityMatrix(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		alice := apptest.Token(t, "alice")
		env.MustRegister(alice, "p1")
		key := []byte(apptest.Secret)
		exp := time.Now().Add(time.Hour).Unix()
		expired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}).SignedString(key)
		forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": exp, "roles": []string{"admin"}}).SignedString([]byte("not-the-secret-0123456789abcdefgh"))
		none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": exp, "roles": []string{"admin"}}).SignedString(jwt.UnsafeAllowNoneSignatureType)
		unauthenticated := map[string]string{"no token": "", "expired": expired, "wrong signature": forged, "alg none": none, "garbage": "a.b.c"}
		bob := apptest.Token(t, "bob")
		svc := apptest.Token(t, "ingestor", "service")

		for _, ep := range endpoints {
			for name, tok := range unauthenticated {
				t.Run(name+" "+ep.method+" "+ep.path, func(t *testing.T) {
					r := env.Do(ep.method, ep.path, tok, bodyOf(ep))
					r.ExpectError(t, 401, "PROXY_USAGE_004")
					onlyErrorFields(t, r)
				})
			}
			if ep.admin {
				for name, tok := range map[string]string{"plain user": alice, "service": svc} {
					t.Run(name+" on admin "+ep.method+" "+ep.path, func(t *testing.T) {
						r := env.Do(ep.method, ep.path, tok, bodyOf(ep))
						r.ExpectError(t, 403, "PROXY_USAGE_005")
						onlyErrorFields(t, r)
					})
				}
			}
			if ep.proxy && !strings.HasPrefix(ep.path, "/proxies/p1") || ep.method == "DELETE" {
				// Another user's proxy is not found — never "forbidden", which
				// would confirm it exists.
				t.Run("other user "+ep.method+" "+ep.path, func(t *testing.T) {
					r := env.Do(ep.method, ep.path, bob, bodyOf(ep))
					r.ExpectError(t, 404, "PROXY_USAGE_006")
					onlyErrorFields(t, r)
				})
			}
		}
		// Registering someone else's id is a conflict; reading it as the
		// service role is still not allowed (service writes, reads as a user).
		env.Do("PUT", "/proxies/p1", bob, nil).ExpectError(t, 409, "PROXY_USAGE_007")
		env.Do("GET", "/proxy/usage/p1/summary", svc, nil).ExpectError(t, 404, "PROXY_USAGE_006")
		// Cross-tenant userId is refused for non-admins.
		for _, p := range []string{
			"/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-02&userId=alice",
			"/proxy/usage/aggregation?periodStart=2026-01-01&periodEnd=2026-01-02&userId=alice",
			"/proxy/usage/billing?periodStart=2026-01-01&periodEnd=2026-01-02&userId=alice",
		} {
			env.Do("GET", p, bob, nil).ExpectError(t, 403, "PROXY_USAGE_005")
		}
		env.Do("POST", "/proxy/usage/aggregate", bob, `{"periodStart":"2026-01-01","periodEnd":"2026-01-02","userId":"alice"}`).ExpectError(t, 403, "PROXY_USAGE_005")
		// Bob's own report does not include alice's proxy.
		rep := env.Do("GET", "/proxy/usage/report?startDate=2026-01-01&endDate=2026-01-02&groupBy=proxy", bob, nil)
		if strings.Contains(string(rep.Body), "p1") {
			t.Fatalf("bob's report shows alice's proxy: %s", rep.Body)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 0 {
			t.Fatalf("refused requests stored %d events", n)
		}
	})
}

func bodyOf(ep endpoint) any {
	if ep.body == "" {
		return nil
	}
	return ep.body
}

func TestHostileInput(t *testing.T) {
	env := apptest.Start(t, database.Postgres)
	tok := apptest.Token(t, "alice")
	env.MustRegister(tok, "p1")
	ids := []string{
		"'%3B%20DROP%20TABLE%20proxies%3B--", "p1'%20OR%20'1'%3D'1", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", "pr%C3%B8xy",
		"%00", "p1%0Aextra", "%F0%9F%98%80", strings.Repeat("x", 129),
	}
	for _, id := range ids {
		t.Run("register "+id, func(t *testing.T) {
			r := env.Do("PUT", "/proxies/"+id, tok, nil)
			if r.Status != 400 && r.Status != 404 {
				t.Fatalf("PUT %s: %d %s", id, r.Status, r.Body)
			}
			onlyErrorFields(t, r)
			r = env.Do("GET", "/proxy/usage/"+id+"/summary", tok, nil)
			if r.Status != 404 {
				t.Fatalf("GET %s: %d %s", id, r.Status, r.Body)
			}
			onlyErrorFields(t, r)
		})
	}
	bodies := map[string]string{
		"NaN":              `{"eventType":"data_transfer","eventData":{"latencyMs":NaN}}`,
		"Infinity":         `{"eventType":"data_transfer","eventData":{"latencyMs":Infinity}}`,
		"huge float":       `{"eventType":"data_transfer","eventData":{"durationSeconds":1e400}}`,
		"huge integer":     `{"eventType":"data_transfer","eventData":{"bytesSent":99999999999999999999999}}`,
		"duplicate nested": `{"eventType":"data_transfer","eventData":{"bytesSent":1,"bytesSent":2}}`,
		"deep nesting":     strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		"invalid utf8":     "{\"eventType\":\"error\",\"eventData\":{\"errorMessage\":\"\xff\xfe\"}}",
		"sql in type":      `{"eventType":"error'); DELETE FROM usage_events; --"}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			r := env.Do("POST", "/proxy/usage/p1/record", tok, body)
			r.ExpectError(t, 400, "PROXY_USAGE_001")
			onlyErrorFields(t, r)
		})
	}
	// Unicode text that PostgreSQL can store is fine.
	r := env.Do("POST", "/proxy/usage/p1/record", tok, `{"eventType":"error","eventId":"é-😀","eventData":{"errorMessage":"тайм-аут 😀"}}`)
	if r.Status != 201 {
		t.Fatalf("unicode: %d %s", r.Status, r.Body)
	}
	// Over-long headers and query strings are bounded by the server.
	req, _ := http.NewRequest("GET", env.URL+"/proxy/usage/report?startDate="+strings.Repeat("9", 5000)+"&endDate=2026-01-01", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	env.Send(req).ExpectError(t, 400, "PROXY_USAGE_001")
	if n := env.Count(`SELECT count(*) FROM usage_events`); n != 1 {
		t.Fatalf("stored %d events, want 1", n)
	}
	if n := env.Count(`SELECT count(*) FROM proxies`); n != 1 {
		t.Fatalf("stored %d proxies, want 1", n)
	}
}
