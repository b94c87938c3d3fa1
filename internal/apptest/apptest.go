// Package apptest runs the real service wiring (app.Main) against a fresh
// test database, on each available backend, and offers a small HTTP client
// for end-to-end tests.
package apptest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/app"
	"proxyusage/internal/auth"
	"proxyusage/internal/config"
	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
)

// Secret signs test tokens.
const Secret = "test-secret-0123456789abcdef0123456789"

// Env is a running service on its own database.
type Env struct {
	T       testing.TB
	Backend database.Backend
	Main    *app.Main
	URL     string
	DBURL   string
	DB      *pgxpool.Pool // direct access for assertions
	Client  *http.Client
}

// Option adjusts the service before start.
type Option func(*app.Main)

// NoWorker keeps the rollup worker from running in the background, so a
// test decides when rollups happen (env.Main.Rollup.RunOnce).
func NoWorker(m *app.Main) { m.Manual.Rollup = true }

// NoAlertEvaluator keeps the alert evaluator from running in the
// background, so a test decides when thresholds are evaluated
// (env.Main.Alerts.RunOnce), or that they are not.
func NoAlertEvaluator(m *app.Main) { m.Manual.AlertEvaluator = true }

// NoAlertDelivery keeps this replica from delivering webhooks.
func NoAlertDelivery(m *app.Main) { m.Manual.AlertDelivery = true }

// Quiet runs no background service at all (rollups, alert evaluation,
// deliveries): the only statements are the test's requests'.
func Quiet(m *app.Main) {
	m.Manual = app.Manual{Rollup: true, AlertEvaluator: true, AlertDelivery: true}
}

// ReadFromStandby points the service's reads at the test standby
// (pgtest.Standby) of its database, waiting at most fenceTimeout for it to
// replay a request's fence (0: the default).
func ReadFromStandby(t testing.TB, fenceTimeout time.Duration) Option {
	return func(m *app.Main) {
		m.Config.ReadDatabaseURL = pgtest.StandbyURL(t, m.Config.DatabaseURL)
		m.Config.ReadFenceTimeout = cmp.Or(fenceTimeout, config.DefaultReadFenceTimeout)
	}
}

// NoReadFence sends reads to the standby without waiting for it to replay
// the request's fence (with ReadFromStandby): reads after a write may then
// be stale, which shows that the fence is what keeps them exact.
func NoReadFence(m *app.Main) { m.ReadWithoutFence = true }

// ForEachBackend runs fn as a subtest per available backend.
func ForEachBackend(t *testing.T, fn func(t *testing.T, b database.Backend)) {
	pgtest.ForEachBackend(t, fn)
}

// Start runs the service on a fresh database of backend b.
func Start(t testing.TB, b database.Backend, opts ...Option) *Env {
	t.Helper()
	return startOn(t, b, pgtest.NewDB(t, b), opts...)
}

// Replica runs another instance of the service on e's database, as a
// second replica behind a load balancer would.
func (e *Env) Replica(opts ...Option) *Env {
	e.T.Helper()
	return startOn(e.T, e.Backend, e.DBURL, opts...)
}

func startOn(t testing.TB, b database.Backend, dbURL string, opts ...Option) *Env {
	t.Helper()
	cfg := config.Config{
		DatabaseURL:      dbURL,
		Backend:          string(b),
		HTTPAddr:         "127.0.0.1:0",
		JWTSecret:        Secret,
		DedupWindow:      config.DefaultDedupWindow,
		LateDataWindow:   config.DefaultLateDataWindow,
		MaxFutureSkew:    config.DefaultMaxFutureSkew,
		MaxConnectionAge: config.DefaultMaxConnectionAge,
		RawRetention:     config.DefaultRawRetention,
	}
	level := slog.LevelError
	if os.Getenv("TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	m := &app.Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))}
	for _, o := range opts {
		o(m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("apptest: start: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	pool, err := database.Connect(ctx, dbURL, 4)
	if err != nil {
		t.Fatalf("apptest: %v", err)
	}
	t.Cleanup(pool.Close)
	return &Env{T: t, Backend: b, Main: m, URL: m.Server.URL(), DBURL: dbURL, DB: pool,
		Client: &http.Client{Timeout: 30 * time.Second}}
}

// Token mints a valid token for sub with roles.
func Token(t testing.TB, sub string, roles ...string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(Secret), sub, roles, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Response is a decoded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not a JSON object (%d): %s", r.Status, r.Body)
	}
	return m
}

// Decode decodes the body into v.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %d response: %v: %s", r.Status, err, r.Body)
	}
}

// Do sends a request. body may be nil, []byte, string or a value to encode.
func (e *Env) Do(method, path, token string, body any) Response {
	e.T.Helper()
	return e.Send(e.Request(method, path, token, body))
}

// Request prepares what Do sends: body as in Do, JSON content type when
// there is one, the bearer token when given.
func (e *Env) Request(method, path, token string, body any) *http.Request {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			e.T.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		e.T.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// Send sends a prepared request.
func (e *Env) Send(req *http.Request) Response {
	e.T.Helper()
	resp, err := e.Client.Do(req)
	if err != nil {
		e.T.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.T.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Count runs a count query on the test database.
func (e *Env) Count(query string, args ...any) int {
	e.T.Helper()
	var n int
	if err := e.DB.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.T.Fatalf("count %q: %v", query, err)
	}
	return n
}

// MustRegister registers proxy id for the token's user.
func (e *Env) MustRegister(token, id string) {
	e.T.Helper()
	r := e.Do(http.MethodPut, "/proxies/"+id, token, map[string]string{"name": id})
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		e.T.Fatalf("register %s: %d %s", id, r.Status, r.Body)
	}
}

// ExpectError asserts an error response with status and API error code, and
// returns its body.
func (r Response) ExpectError(t testing.TB, status int, code string) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d: %s", r.Status, status, r.Body)
	}
	m := r.JSON(t)
	if m["code"] != code || m["status"] != float64(status) || m["correlationId"] == "" || m["message"] == "" {
		t.Fatalf("error body = %s, want code %s", r.Body, code)
	}
	return m
}
