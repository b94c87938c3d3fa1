package http

import (
	"fmt"
	"sync"
	"testing"

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
