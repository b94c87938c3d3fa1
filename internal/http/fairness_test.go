package http_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// rawConn is a client connection driven byte by byte, for requests that
// net/http's client cannot send (bodies that stall, connections held).
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, env *apptest.Env) *rawConn {
	t.Helper()
	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// startBody sends a request head declaring a body of declared bytes with
// Expect: 100-continue and waits for the server's "100 Continue", which
// it sends when the handler starts reading the body: from then on the
// request is in flight, past every limit in front of the handler.
func (c *rawConn) startBody(method, path, token string, declared int) {
	c.t.Helper()
	c.head(method, path, token, declared, true)
	line, err := c.readLine()
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		c.t.Fatalf("%s %s: want 100 Continue, got %q %v", method, path, line, err)
	}
	if blank, err := c.readLine(); blank != "" || err != nil {
		c.t.Fatalf("after 100 Continue: %q %v", blank, err)
	}
}

func (c *rawConn) head(method, path, token string, declared int, expectContinue bool) {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: proxyusage\r\n", method, path)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	if declared >= 0 {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", declared)
	}
	if expectContinue {
		b.WriteString("Expect: 100-continue\r\n")
	}
	b.WriteString("\r\n")
	c.write(b.String())
}

func (c *rawConn) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) readLine() (string, error) {
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := c.br.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// get sends a GET and reads its response.
func (c *rawConn) get(path, token string) (*http.Response, []byte) {
	c.t.Helper()
	c.head("GET", path, token, -1, false)
	resp, body, err := c.response(30 * time.Second)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	return resp, body
}

// response reads one response, waiting at most within.
func (c *rawConn) response(within time.Duration) (*http.Response, []byte, error) {
	c.c.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// closedByServer reports whether the server closed the connection: a read
// ends in EOF (or a reset) rather than waiting.
func (c *rawConn) closedByServer(within time.Duration) bool {
	c.c.SetReadDeadline(time.Now().Add(within))
	_, err := c.br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// metric sums the samples of a metric whose label text contains every
// one of labels.
func metric(t testing.TB, env *apptest.Env, name string, labels ...string) float64 {
	t.Helper()
	r := env.Do("GET", "/metrics", "", nil)
	var sum float64
	for _, line := range strings.Split(string(r.Body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func batchBody(proxy string, n int, tag string) string {
	var b strings.Builder
	b.WriteString(`{"events":[`)
	ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"proxyId":%q,"eventId":"%s-%d","timestamp":%q,"eventType":"data_transfer","eventData":{"bytesSent":%d}}`, proxy, tag, i, ts, i+1)
	}
	b.WriteString(`]}`)
	return b.String()
}

// Eight uploads that declare 10 MiB each and trickle their bytes hold
// almost no memory: memory is reserved as bytes arrive, not from the
// declared length, so another tenant's batches still get in (before, the
// declared 80 MiB exceeded the 64 MiB budget and batches were shed).
func TestSlowUploadsDoNotStarveBatches(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b)
		mallory, alice := apptest.Token(t, "mallory"), apptest.Token(t, "alice")
		env.MustRegister(mallory, "m1")
		env.MustRegister(alice, "a1")

		stop := make(chan struct{})
		var trickling sync.WaitGroup
		for range 8 {
			c := dial(t, env)
			c.startBody("POST", "/proxy/usage/events", mallory, 10<<20)
			c.write(`{"events":[`)
			trickling.Add(1)
			go func() {
				defer trickling.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
						if _, err := io.WriteString(c.c, `{"proxyId":"m1","eventType":"error"},`); err != nil {
							return
						}
					}
				}
			}()
		}
		defer func() { close(stop); trickling.Wait() }()

		for i := range 3 {
			r := env.Do("POST", "/proxy/usage/events", alice, batchBody("a1", 1000, fmt.Sprint("v", i)))
			if r.Status != 201 {
				t.Fatalf("victim batch %d while slow uploads are held: %d %s", i, r.Status, r.Body)
			}
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE proxy_id = 'a1'`); n != 3000 {
			t.Fatalf("victim stored %d events, want 3000", n)
		}
		if n := env.Count(`SELECT count(*) FROM usage_events WHERE proxy_id = 'm1'`); n != 0 {
			t.Fatalf("unfinished uploads stored %d events", n)
		}
	})
}

// A body must arrive within BODY_TIMEOUT, however its bytes trickle: past
// it the answer is 408 PROXY_USAGE_010 and nothing is stored.
func TestBodyTimeout(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, func(m *app.Main) { m.Config.BodyTimeout = 300 * time.Millisecond })
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")

		for _, tc := range []struct{ name, method, path, prefix string }{
			{"stalled batch", "POST", "/proxy/usage/events", `{"events":[`},
			{"trickled batch", "POST", "/proxy/usage/events", ""},
			{"stalled event", "POST", "/proxy/usage/p1/record", `{"eventType":`},
			{"stalled registration", "PUT", "/proxies/p2", `{"name":`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := dial(t, env)
				c.head(tc.method, tc.path, tok, 1000, false)
				if tc.prefix != "" {
					c.write(tc.prefix)
				} else {
					// One byte every 20 ms: each read is quick, the body
					// as a whole is not.
					stop := make(chan struct{})
					defer close(stop)
					go func() {
						for {
							select {
							case <-stop:
								return
							case <-time.After(20 * time.Millisecond):
								if _, err := c.c.Write([]byte(" ")); err != nil {
									return
								}
							}
						}
					}()
				}
				resp, body, err := c.response(30 * time.Second)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				r := apptest.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
				r.ExpectError(t, 408, "PROXY_USAGE_010")
				if !c.closedByServer(30 * time.Second) {
					t.Fatal("connection left open after a body timeout")
				}
			})
		}
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 0 {
			t.Fatalf("stored %d events", n)
		}
		if n := env.Count(`SELECT count(*) FROM proxies WHERE id = 'p2'`); n != 0 {
			t.Fatal("registered a proxy from a timed-out body")
		}
	})
}

// Once its body is in, a request may take longer than BODY_TIMEOUT: the
// deadline covers the upload only.
func TestBodyTimeoutDoesNotCutWork(t *testing.T) {
	env := apptest.Start(t, database.Postgres, apptest.Quiet, func(m *app.Main) { m.Config.BodyTimeout = 200 * time.Millisecond })
	tok := apptest.Token(t, "alice")
	env.MustRegister(tok, "p1")
	today := time.Now().UTC().Format("2006-01-02")

	unlock := lockTable(t, env, "proxy_usage_aggregation")
	done := make(chan apptest.Response, 1)
	go func() {
		done <- env.Do("POST", "/proxy/usage/aggregate", tok, map[string]string{"periodStart": today, "periodEnd": today})
	}()
	waitFor(t, "the snapshot to wait for the lock", func() bool { return lockWaiters(t, env) > 0 })
	time.Sleep(3 * 200 * time.Millisecond) // well past the body deadline
	unlock()
	if r := <-done; r.Status != 200 {
		t.Fatalf("snapshot after a long wait: %d %s", r.Status, r.Body)
	}
}

// lockTable holds an exclusive lock on table until the returned func runs.
func lockTable(t testing.TB, env *apptest.Env, table string) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := env.DB.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock := func() { once.Do(func() { _ = tx.Rollback(ctx) }) }
	t.Cleanup(unlock)
	return unlock
}

// lockWaiters counts the service's statements waiting for a lock.
func lockWaiters(t testing.TB, env *apptest.Env) int {
	return env.Count(`SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)
}

// A caller may have MAX_INFLIGHT_PER_USER requests in flight, a service
// caller MAX_INFLIGHT_PER_SERVICE; past it 429 with Retry-After, while
// other callers are unaffected.
func TestPerCallerInflightLimit(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, func(m *app.Main) {
			m.Config.MaxInflightPerUser = 2
			m.Config.MaxInflightPerService = 3
		})
		alice, bob := apptest.Token(t, "alice"), apptest.Token(t, "bob")
		svc := apptest.Token(t, "ingestor", "service")
		env.MustRegister(alice, "a1")
		env.MustRegister(bob, "b1")

		hold := func(tok string) *rawConn {
			c := dial(t, env)
			c.startBody("POST", "/proxy/usage/events", tok, 1000)
			return c
		}
		aliceHeld := []*rawConn{hold(alice), hold(alice)}
		r := env.Do("GET", "/proxies", alice, nil)
		r.ExpectError(t, 429, "PROXY_USAGE_009")
		if r.JSON(t)["error"] != "TOO_MANY_REQUESTS" || r.Header.Get("Retry-After") != "1" {
			t.Fatalf("429 without TOO_MANY_REQUESTS or Retry-After: %v %s", r.Header, r.Body)
		}
		env.Do("POST", "/proxy/usage/a1/record", alice, `{"eventType":"error"}`).ExpectError(t, 429, "PROXY_USAGE_009")
		if r := env.Do("GET", "/proxies", bob, nil); r.Status != 200 {
			t.Fatalf("bob while alice is at her limit: %d %s", r.Status, r.Body)
		}

		// The service role has its own, larger limit.
		for range 3 {
			hold(svc)
		}
		env.Do("POST", "/proxy/usage/b1/record", svc, `{"eventType":"error"}`).ExpectError(t, 429, "PROXY_USAGE_009")
		if r := env.Do("POST", "/proxy/usage/b1/record", bob, `{"eventType":"error"}`); r.Status != 201 {
			t.Fatalf("bob while the service is at its limit: %d %s", r.Status, r.Body)
		}

		// A slot frees when its request ends (here: its client leaves).
		aliceHeld[0].c.Close()
		waitFor(t, "alice's slot to free", func() bool { return env.Do("GET", "/proxies", alice, nil).Status == 200 })
		if n := env.Count(`SELECT count(*) FROM usage_events`); n != 1 {
			t.Fatalf("stored %d events, want bob's one", n)
		}
	})
}

// Keep-alive connections idle for IDLE_TIMEOUT are closed.
func TestIdleConnectionsClosed(t *testing.T) {
	env := apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.IdleTimeout = 200 * time.Millisecond })
	c := dial(t, env)
	if resp, _ := c.get("/healthz", ""); resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	if !c.closedByServer(30 * time.Second) {
		t.Fatal("idle keep-alive connection was not closed")
	}
}

// At MAX_CONNS a new connection gets in by closing the longest-idle one;
// when every connection is busy it waits for one to finish.
func TestMaxConns(t *testing.T) {
	env := apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.MaxConns = 3 })
	tok := apptest.Token(t, "alice")

	// Three connections that have not sent anything fill the cap.
	idle := []*rawConn{dial(t, env), dial(t, env), dial(t, env)}
	fresh := dial(t, env)
	if resp, _ := fresh.get("/healthz", ""); resp.StatusCode != 200 {
		t.Fatalf("healthz over a new connection at the cap: %d", resp.StatusCode)
	}
	// It was closed before the new one was served, so its end is here
	// already (the short bound stays clear of the 10 s header timeout
	// that closes silent connections anyway).
	if !idle[0].closedByServer(2 * time.Second) {
		t.Fatal("the longest-idle connection was not closed to make room")
	}
	for _, c := range append(idle[1:], fresh) {
		c.c.Close()
	}

	// Three busy connections: a fourth waits until one of them is done.
	// (Connections closed above but not yet noticed by the server are
	// still counted as idle, so they are the ones making room here.)
	var busy []*rawConn
	for range 3 {
		c := dial(t, env)
		c.startBody("POST", "/proxy/usage/events", tok, 1000)
		busy = append(busy, c)
	}
	waiting := dial(t, env)
	waiting.head("GET", "/healthz", "", -1, false)
	if _, _, err := waiting.response(300 * time.Millisecond); err == nil {
		t.Fatal("a connection beyond MAX_CONNS was served while all were busy")
	}
	busy[0].c.Close()
	resp, _, err := waiting.response(30 * time.Second)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("waiting connection after a slot freed: %v %v", resp, err)
	}

	// Anonymous idle connections go before one that carried an
	// authenticated request, however long that one has been idle (on a
	// service of its own, so no connection closed above is still counted).
	env = apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.MaxConns = 3 })
	tenant := dial(t, env)
	if resp, body := tenant.get("/proxies", tok); resp.StatusCode != 200 {
		t.Fatalf("GET /proxies: %d %s", resp.StatusCode, body)
	}
	// The server marks the connection idle just after the answer; give it
	// a moment so that the tenant's is the longest-idle connection.
	time.Sleep(100 * time.Millisecond)
	anon := []*rawConn{dial(t, env), dial(t, env)}
	if resp, _ := dial(t, env).get("/healthz", ""); resp.StatusCode != 200 {
		t.Fatalf("healthz over a new connection at the cap: %d", resp.StatusCode)
	}
	if !anon[0].closedByServer(2*time.Second) || tenant.closedByServer(100*time.Millisecond) {
		t.Fatal("a tenant's idle connection was closed before an anonymous one")
	}
}

// Past a quarter of MAX_CONNS, an anonymous connection is closed after its
// answer; below it, and for connections that carried an authenticated
// request, keep-alive stays.
func TestAnonymousConnectionsNotKeptNearTheCap(t *testing.T) {
	env := apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.MaxConns = 16 })
	tok := apptest.Token(t, "alice")
	// Anonymous connections one by one: kept while at most 4 are open (the
	// test client may hold one or two of its own), then closed after their
	// answer.
	var kept []*rawConn
	var closed bool
	for len(kept) < 6 && !closed {
		c := dial(t, env)
		if resp, _ := c.get("/healthz", ""); resp.StatusCode != 200 {
			t.Fatalf("healthz: %d", resp.StatusCode)
		}
		if closed = c.closedByServer(300 * time.Millisecond); !closed {
			kept = append(kept, c)
		}
	}
	if !closed || len(kept) < 2 {
		t.Fatalf("%d anonymous connections kept before one was closed (closed: %v), want 2-4 then a close", len(kept), closed)
	}
	// A tenant's connection is kept past the quarter.
	tenant := dial(t, env)
	if resp, body := tenant.get("/proxies", tok); resp.StatusCode != 200 {
		t.Fatalf("GET /proxies: %d %s", resp.StatusCode, body)
	}
	if tenant.closedByServer(300 * time.Millisecond) {
		t.Fatal("a tenant's connection past a quarter of the cap was closed")
	}
	// Those kept serve further requests.
	if resp, _ := kept[0].get("/healthz", ""); resp.StatusCode != 200 {
		t.Fatalf("second request on a kept anonymous connection: %d", resp.StatusCode)
	}
	if resp, body := tenant.get("/proxies", tok); resp.StatusCode != 200 {
		t.Fatalf("second request on the tenant's connection: %d %s", resp.StatusCode, body)
	}
}

// /readyz answers from a check at most a second old: a burst of probes
// costs at most one database check per second, however many callers.
func TestReadyzCached(t *testing.T) {
	env := apptest.Start(t, database.Postgres, apptest.NoWorker)
	before := metric(t, env, "proxyusage_readiness_checks_total")
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				resp, err := env.Client.Get(env.URL + "/readyz")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("readyz: %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	checks := metric(t, env, "proxyusage_readiness_checks_total") - before
	// Each check's result is reused for a second after it started.
	if limit := elapsed.Seconds() + 1; checks < 1 || checks > limit {
		t.Fatalf("200 probes in %v ran %v readiness checks, want 1..%.0f", elapsed, checks, limit)
	}
}

// logRecorder keeps every log record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) errors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level >= slog.LevelError {
			out = append(out, r.Message)
		}
	}
	return out
}

// A client that goes away mid-request is not a server error: its database
// statement is cancelled, the request is recorded as 499 (no 5xx in the
// metrics) and logged below error level.
func TestClientGoneIsNotAnError(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		logs := &logRecorder{}
		env := apptest.Start(t, b, apptest.Quiet, func(m *app.Main) {
			m.Logger = slog.New(logs)
			if os.Getenv("TEST_LOG") != "" {
				m.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
			}
		})
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")

		unlock := lockTable(t, env, "proxies")
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+"/proxy/usage/p1/summary", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		gone := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			gone <- err
		}()
		waitFor(t, "the read to wait for the lock", func() bool { return lockWaiters(t, env) > 0 })
		cancel()
		<-gone
		// The statement is cancelled on the server while the lock is
		// still held, and the request is recorded as the client's doing.
		waitFor(t, "the statement to be cancelled", func() bool { return lockWaiters(t, env) == 0 })
		route := `route="/proxy/usage/{proxyId}/summary"`
		waitFor(t, "the request to be recorded", func() bool { return metric(t, env, "proxyusage_http_requests_total", route) > 0 })
		unlock()
		if n := metric(t, env, "proxyusage_http_requests_total", route, `status="499"`); n != 1 {
			t.Fatalf("recorded %v requests as 499, want 1", n)
		}
		if n := metric(t, env, "proxyusage_http_requests_total", `status="5`); n != 0 {
			t.Fatalf("a client going away counted %v 5xx", n)
		}
		if errs := logs.errors(); len(errs) > 0 {
			t.Fatalf("logged at error level: %v", errs)
		}
	})
}

// Every read is bounded by READ_TIMEOUT: 503 with Retry-After, and its
// database statement is cancelled too.
func TestReadTimeout(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		env := apptest.Start(t, b, apptest.Quiet, func(m *app.Main) { m.Config.ReadTimeout = 300 * time.Millisecond })
		tok := apptest.Token(t, "alice")
		env.MustRegister(tok, "p1")

		unlock := lockTable(t, env, "proxies")
		r := env.Do("GET", "/proxy/usage/p1/summary", tok, nil)
		r.ExpectError(t, 503, "PROXY_USAGE_002")
		if r.Header.Get("Retry-After") == "" || !strings.Contains(r.JSON(t)["message"].(string), "300ms") {
			t.Fatalf("timeout answer without Retry-After or reason: %v %s", r.Header, r.Body)
		}
		waitFor(t, "the statement to be cancelled", func() bool { return lockWaiters(t, env) == 0 })
		unlock()
		if r := env.Do("GET", "/proxy/usage/p1/summary", tok, nil); r.Status != 200 {
			t.Fatalf("after the lock: %d %s", r.Status, r.Body)
		}
	})
}
