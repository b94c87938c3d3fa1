package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/localdb"
)

// With the database down every request answers 503/PROXY_USAGE_002 with
// Retry-After within a second and /readyz fails; when it returns, the
// service recovers by itself. Nothing acknowledged is lost.
func TestDatabaseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir, err := os.MkdirTemp("", "proxyusage-outage-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	port, err := localdb.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cluster := &localdb.Cluster{Dir: dir + "/pg", Port: port, Ephemeral: true}
	ctx := context.Background()
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Kill(); _ = os.RemoveAll(dir) })
	if err := localdb.CreateDatabase(ctx, cluster.URL("postgres"), "outage"); err != nil {
		t.Fatal(err)
	}
	dbURL := cluster.URL("outage")
	svc := startService(t, dbURL)
	tok := apptest.Token(t, "alice")
	register(t, svc.url, tok, "p1")

	l := newLedger()
	loadCtx, stopLoad := context.WithCancel(ctx)
	load := drive(loadCtx, svc.url, tok, l, 8)
	time.Sleep(500 * time.Millisecond)

	if err := cluster.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(300 * time.Millisecond)
	client := &http.Client{Timeout: 5 * time.Second}
	check := func(method, path, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, svc.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		took := time.Since(start)
		b, _ := io.ReadAll(resp.Body)
		var e struct{ Code string }
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != 503 || e.Code != "PROXY_USAGE_002" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s %s with the database down: %d %s (Retry-After %q)", method, path, resp.StatusCode, b, resp.Header.Get("Retry-After"))
		}
		if took > time.Second {
			t.Fatalf("%s %s took %v with the database down", method, path, took)
		}
	}
	for i := range 5 {
		check("POST", "/proxy/usage/p1/record", fmt.Sprintf(`{"eventType":"error","eventId":"down-%d"}`, i))
		check("POST", "/proxy/usage/events", `{"events":[{"proxyId":"p1","eventType":"error"}]}`)
		check("GET", "/proxy/usage/p1/summary", "")
		check("GET", "/proxies", "")
		check("PUT", "/proxies/p2", "")
		time.Sleep(100 * time.Millisecond)
	}
	// /readyz answers from a check at most a second old: past that, every
	// answer comes from a check that saw the database down.
	time.Sleep(time.Until(down.Add(1100 * time.Millisecond)))
	for range 3 {
		resp, err := client.Get(svc.url + "/readyz")
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("readyz with the database down for over a second: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	if resp, err := client.Get(svc.url + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("liveness must not depend on the database: %v %v", resp, err)
	}

	// The database returns; the service recovers without a restart.
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	var recovered atomic.Bool
	deadline := time.Now().Add(30 * time.Second)
	for !recovered.Load() {
		status, err := post(client, svc.url+"/proxy/usage/p1/record", tok, map[string]any{"eventType": "error", "eventId": "after"})
		if err == nil && (status == 201 || status == 200) {
			recovered.Store(true)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service did not recover: %d %v", status, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Ready again once a check newer than the outage's last one has run.
	for ready := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get(svc.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(ready) {
			t.Fatalf("readyz after recovery: %v %v", resp, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	load.Wait()

	stored := storedCounts(t, dbURL)
	var mu sync.Mutex
	mu.Lock()
	defer mu.Unlock()
	for id := range l.acked {
		if stored[id] != 1 {
			t.Fatalf("acknowledged %s stored %d times", id, stored[id])
		}
	}
	if stored["after"] != 1 {
		t.Fatal("event recorded after recovery is missing")
	}
	t.Logf("%d acknowledged events all stored across the outage", len(l.acked))
}
