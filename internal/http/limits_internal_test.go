package http

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"proxyusage/internal/auth"
)

// The per-caller counters hold an entry only while its caller has a
// request in flight, so hostile callers (any number of distinct subs)
// cannot grow the map beyond the requests in flight.
func TestCallerLimiterForgetsIdleCallers(t *testing.T) {
	l := newCallerLimiter(2, 3)
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := auth.Principal{UserID: fmt.Sprint("user-", i%50)}
			if l.acquire(p) {
				l.release(p.UserID)
			}
		}()
	}
	wg.Wait()
	if n := l.tracked(); n != 0 {
		t.Fatalf("%d callers tracked with nothing in flight", n)
	}

	user, svc := auth.Principal{UserID: "u"}, auth.Principal{UserID: "s", Roles: []string{auth.RoleService}}
	for i := range 4 {
		if got, want := l.acquire(user), i < 2; got != want {
			t.Fatalf("user request %d: acquired %v, want %v", i, got, want)
		}
		if got, want := l.acquire(svc), i < 3; got != want {
			t.Fatalf("service request %d: acquired %v, want %v", i, got, want)
		}
	}
	if n := l.tracked(); n != 2 {
		t.Fatalf("tracked %d callers, want 2", n)
	}
	l.release("u")
	if !l.acquire(user) {
		t.Fatal("a released slot was not reusable")
	}
}

// Past a quarter of the cap, connections are accepted at the flood pace;
// below it, at once.
func TestConnLimiterPacesAcceptsPastAQuarter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimiter(ln, 8, prometheus.NewGauge(prometheus.GaugeOpts{Name: "open"}))
	l.acceptEvery = 50 * time.Millisecond
	defer l.Close()
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range 8 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	accepted := make([]time.Time, 0, 8)
	for range 8 {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		accepted = append(accepted, time.Now())
	}
	// Accepts 1-3 leave at most 2 (a quarter) open before them; the 4th
	// is the first past it, and each later one waits its turn.
	if d := accepted[7].Sub(accepted[3]); d < 4*l.acceptEvery {
		t.Fatalf("accepts 4-8 took %v, want at least %v", d, 4*l.acceptEvery)
	}
}
