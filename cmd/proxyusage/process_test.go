package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	httpx "proxyusage/internal/http"
	"proxyusage/internal/localdb"
	"proxyusage/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the real proxyusage binary once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "proxyusage-bin-")
		if err != nil {
			buildErr = err
			return
		}
		pgtest.AtExit(func() { _ = os.RemoveAll(dir) })
		binPath = filepath.Join(dir, "proxyusage")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// service is a running `proxyusage serve` process.
type service struct {
	cmd     *exec.Cmd
	url     string
	done    chan struct{} // closed when the process has exited
	exitErr error
	logs    *bytes.Buffer
}

func startService(t *testing.T, dbURL string) *service {
	t.Helper()
	port, err := localdb.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "serve")
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", port),
		"JWT_SECRET="+apptest.Secret, "LOG_LEVEL=warn", "BACKEND=postgres")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &service{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{}), logs: logs}
	go func() { s.exitErr = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("service logs:\n%s", logs)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service did not become ready:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func post(client *http.Client, url, token string, body any) (int, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func register(t *testing.T, url, token, id string) {
	t.Helper()
	req, _ := http.NewRequest("PUT", url+"/proxies/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || (resp.StatusCode != 201 && resp.StatusCode != 200) {
		t.Fatalf("register: %v %v", resp, err)
	}
	resp.Body.Close()
}

// ledger remembers, per eventId, its bytes and whether it was acknowledged.
type ledger struct {
	mu    sync.Mutex
	bytes map[string]int64
	acked map[string]bool
}

func newLedger() *ledger { return &ledger{bytes: map[string]int64{}, acked: map[string]bool{}} }

func (l *ledger) sent(ids []string, n []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, id := range ids {
		l.bytes[id] = n[i]
	}
}

func (l *ledger) ack(ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.acked[id] = true
	}
}

func (l *ledger) events(ids []string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]map[string]any, len(ids))
	for i, id := range ids {
		out[i] = map[string]any{"proxyId": "p1", "eventType": "data_transfer", "eventId": id,
			"eventData": map[string]any{"bytesSent": l.bytes[id]}}
	}
	return out
}

// drive sends events from several clients until ctx ends: single records
// and batches of 5, recording what was acknowledged.
func drive(ctx context.Context, url, token string, l *ledger, clients int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ctx.Err() == nil; i++ {
				n := 1 + i%5
				if c%2 == 0 {
					n = 1
				}
				ids := make([]string, n)
				sizes := make([]int64, n)
				for k := range n {
					ids[k] = fmt.Sprintf("c%d-%d-%d", c, i, k)
					sizes[k] = int64(1 + (c*7919+i*31+k)%1000)
				}
				l.sent(ids, sizes)
				var status int
				var err error
				if n == 1 {
					ev := l.events(ids)[0]
					delete(ev, "proxyId")
					status, err = post(client, url+"/proxy/usage/p1/record", token, ev)
				} else {
					status, err = post(client, url+"/proxy/usage/events", token, map[string]any{"events": l.events(ids)})
				}
				if err == nil && (status == 201 || status == 200) {
					l.ack(ids)
				} else if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	return &wg
}

func storedCounts(t *testing.T, dbURL string) map[string]int {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows, err := pool.Query(context.Background(), `SELECT event_id, count(*) FROM usage_events GROUP BY event_id`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var id string
	var n int
	for rows.Next() {
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	return out
}

// An acknowledged event survives kill -9 of the service, and retrying
// everything unacknowledged with the same eventIds gives exact totals.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dbURL := pgtest.NewDB(t, database.Postgres)
	svc := startService(t, dbURL)
	tok := apptest.Token(t, "alice")
	register(t, svc.url, tok, "p1")

	l := newLedger()
	ctx, cancel := context.WithCancel(context.Background())
	wg := drive(ctx, svc.url, tok, l, 16)
	time.Sleep(1500 * time.Millisecond)
	if err := svc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-svc.done
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()

	stored := storedCounts(t, dbURL)
	if len(l.acked) < 50 {
		t.Fatalf("only %d events acknowledged before the kill", len(l.acked))
	}
	for id := range l.acked {
		if stored[id] != 1 {
			t.Fatalf("acknowledged %s stored %d times after kill -9", id, stored[id])
		}
	}
	t.Logf("%d acknowledged, %d sent, %d stored at kill", len(l.acked), len(l.bytes), len(stored))

	// Restart and retry everything not acknowledged, with the same ids.
	svc2 := startService(t, dbURL)
	var pending []string
	for id := range l.bytes {
		if !l.acked[id] {
			pending = append(pending, id)
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for start := 0; start < len(pending); start += 500 {
		batch := pending[start:min(start+500, len(pending))]
		status, err := post(client, svc2.url+"/proxy/usage/events", tok, map[string]any{"events": l.events(batch)})
		if err != nil || status != 201 {
			t.Fatalf("retry: %d %v", status, err)
		}
		l.ack(batch)
	}
	// Retrying acknowledged ones again changes nothing either.
	var some []string
	for id := range l.acked {
		if some = append(some, id); len(some) == 100 {
			break
		}
	}
	if status, err := post(client, svc2.url+"/proxy/usage/events", tok, map[string]any{"events": l.events(some)}); err != nil || status != 201 {
		t.Fatalf("re-retry: %d %v", status, err)
	}

	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n, sum int64
	if err := pool.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(bytes_sent), 0) FROM usage_events`).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, b := range l.bytes {
		want += b
	}
	if n != int64(len(l.bytes)) || sum != want {
		t.Fatalf("stored %d events with %d bytes, want %d events with %d bytes", n, sum, len(l.bytes), want)
	}
}

// SIGTERM stops accepting, finishes in-flight requests, flushes the group
// commit and exits within 10 s, losing nothing acknowledged.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dbURL := pgtest.NewDB(t, database.Postgres)
	svc := startService(t, dbURL)
	tok := apptest.Token(t, "alice")
	register(t, svc.url, tok, "p1")

	l := newLedger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// One client fewer than alice's in-flight limit, so the big batch below
	// always has a slot: with as many clients as the limit it raced them
	// and sometimes answered 429.
	wg := drive(ctx, svc.url, tok, l, httpx.DefaultMaxInflightPerUser-1)
	// A large batch in flight when SIGTERM arrives must complete.
	big := make([]string, 5000)
	sizes := make([]int64, len(big))
	for i := range big {
		big[i] = fmt.Sprintf("big-%d", i)
		sizes[i] = 1
	}
	l.sent(big, sizes)
	bigDone := make(chan int, 1)
	time.Sleep(700 * time.Millisecond)
	// Stream the batch body: the request is in the handler, reading its body,
	// when SIGTERM arrives, and the rest of the body follows after it.
	body, _ := json.Marshal(map[string]any{"events": l.events(big)})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", svc.url+"/proxy/usage/events", pr)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	go func() {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Errorf("in-flight batch: %v", err)
			bigDone <- 0
			return
		}
		resp.Body.Close()
		if resp.StatusCode == 201 {
			l.ack(big)
		}
		bigDone <- resp.StatusCode
	}()
	if _, err := pw.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	sent := time.Now()
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := pw.Write(body[len(body)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case <-svc.done:
		if svc.exitErr != nil {
			t.Fatalf("exit: %v\n%s", svc.exitErr, svc.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit within 10 s of SIGTERM")
	}
	t.Logf("exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	cancel()
	wg.Wait()
	if s := <-bigDone; s != 201 {
		t.Fatalf("in-flight batch answered %d", s)
	}
	stored := storedCounts(t, dbURL)
	for id := range l.acked {
		if stored[id] != 1 {
			t.Fatalf("acknowledged %s stored %d times", id, stored[id])
		}
	}
	t.Logf("%d acknowledged events all stored", len(l.acked))
}
