package http_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/app"
	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

// Past the in-flight limit the API sheds load with 503 + Retry-After at
// once instead of queueing; health endpoints stay available.
func TestOverloadSheds(t *testing.T) {
	env := apptest.Start(t, database.Postgres, func(m *app.Main) { m.Config.MaxInflight = 1 })
	tok := apptest.Token(t, "alice")
	env.MustRegister(tok, "p1")

	// Hold the only slot with a request whose body is still arriving.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", env.URL+"/proxy/usage/events", pr)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	held := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte(`{"events":[`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	r := env.Do("POST", "/proxy/usage/p1/record", tok, map[string]any{"eventType": "error"})
	r.ExpectError(t, 503, "PROXY_USAGE_002")
	if r.Header.Get("Retry-After") == "" || time.Since(start) > time.Second {
		t.Fatalf("shed without Retry-After or slowly (%v)", time.Since(start))
	}
	if r := env.Do("GET", "/healthz", "", nil); r.Status != 200 {
		t.Fatalf("healthz while saturated: %d", r.Status)
	}
	if _, err := pw.Write([]byte(`{"proxyId":"p1","eventType":"error"}]}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if s := <-held; s != 201 {
		t.Fatalf("held request answered %d", s)
	}
	if n := env.Count(`SELECT count(*) FROM usage_events`); n != 1 {
		t.Fatalf("stored %d events, want only the held one", n)
	}
	m := env.Do("GET", "/metrics", "", nil)
	if !strings.Contains(string(m.Body), "proxyusage_http_shed_total 1") {
		t.Fatal("shed not counted")
	}
}
