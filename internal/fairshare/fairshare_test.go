package fairshare_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"proxyusage/internal/fairshare"
)

const heavy = fairshare.DefaultThreshold + 1

func newGate(t *testing.T, slots int) *fairshare.Gate {
	t.Helper()
	g, err := fairshare.New(fairshare.Config{Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// acquired is the outcome of an Acquire run in its own goroutine.
type acquired struct {
	release func()
	err     error
}

func acquireAsync(g *fairshare.Gate, ctx context.Context, caller string) chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		r, err := g.Acquire(ctx, caller, heavy)
		ch <- acquired{r, err}
	}()
	return ch
}

// waitFor polls cond until it holds or a second passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustAcquire(t *testing.T, g *fairshare.Gate, caller string) func() {
	t.Helper()
	r, err := g.Acquire(context.Background(), caller, heavy)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestConfigValidate(t *testing.T) {
	_, err := fairshare.New(fairshare.Config{Slots: -1, Threshold: -1})
	if err == nil {
		t.Fatal("negative config accepted")
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 2 {
		t.Fatalf("want both problems reported, got %d: %v", n, err)
	}
}

func TestCheapReadsNeverWait(t *testing.T) {
	g := newGate(t, 1)
	defer mustAcquire(t, g, "other")()
	// The one slot is taken and the caller holds nothing: cheap reads of
	// any caller still pass, even with a context already over.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, caller := range []string{"a", "other"} {
		for range 100 {
			r, err := g.Acquire(ctx, caller, fairshare.DefaultThreshold)
			if err != nil {
				t.Fatal(err)
			}
			r()
		}
	}
	if g.Running() != 1 || g.Waiting() != 0 {
		t.Fatalf("running %d, waiting %d", g.Running(), g.Waiting())
	}
}

func TestNilGateAdmitsEverything(t *testing.T) {
	var g *fairshare.Gate
	r, err := g.Acquire(context.Background(), "a", 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	r()
}

func TestCallerHoldsOneSlot(t *testing.T) {
	g := newGate(t, 4)
	r1 := mustAcquire(t, g, "a")
	second := acquireAsync(g, context.Background(), "a")
	waitFor(t, "a's second read to queue", func() bool { return g.Waiting() == 1 })
	// Other callers take the free slots meanwhile.
	rb := mustAcquire(t, g, "b")
	select {
	case <-second:
		t.Fatal("a holds two slots")
	case <-time.After(20 * time.Millisecond):
	}
	r1()
	got := <-second
	if got.err != nil {
		t.Fatal(got.err)
	}
	if g.Running() != 2 {
		t.Fatalf("running %d, want 2 (a's second, b)", g.Running())
	}
	got.release()
	rb()
	if g.Running() != 0 || g.Waiting() != 0 {
		t.Fatalf("running %d, waiting %d", g.Running(), g.Waiting())
	}
}

func TestRoundRobin(t *testing.T) {
	g := newGate(t, 1)
	rc := mustAcquire(t, g, "c")
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	start := func(caller string) {
		wg.Add(1)
		ch := acquireAsync(g, context.Background(), caller)
		go func() {
			defer wg.Done()
			got := <-ch
			if got.err != nil {
				t.Error(got.err)
				return
			}
			mu.Lock()
			order = append(order, caller)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			got.release()
		}()
	}
	for i := range 5 {
		start("a")
		waitFor(t, "a's reads to queue", func() bool { return g.Waiting() == i+1 })
	}
	start("b")
	waitFor(t, "b's read to queue", func() bool { return g.Waiting() == 6 })
	rc()
	wg.Wait()
	want := []string{"a", "b", "a", "a", "a", "a"}
	if len(order) != len(want) {
		t.Fatalf("order %v", order)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v: b waited behind a's queue", order, want)
		}
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	g := newGate(t, 1)
	ra := mustAcquire(t, g, "a")
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(g, ctx, "b")
	waitFor(t, "b to queue", func() bool { return g.Waiting() == 1 })
	cancel()
	select {
	case got := <-ch:
		if !errors.Is(got.err, context.Canceled) || got.release != nil {
			t.Fatalf("got %v", got.err)
		}
	case <-time.After(time.Second):
		t.Fatal("a canceled wait did not return")
	}
	// b gave up: it freed nothing, a still holds the only slot.
	if g.Running() != 1 || g.Waiting() != 0 {
		t.Fatalf("running %d, waiting %d", g.Running(), g.Waiting())
	}
	ra()
	ra() // idempotent: no slot freed twice
	if g.Running() != 0 {
		t.Fatalf("running %d", g.Running())
	}
	// The slot is free for the next caller.
	mustAcquire(t, g, "b")()

	// A deadline is reported as one (the transport answers 503).
	ra = mustAcquire(t, g, "a")
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer dcancel()
	if _, err := g.Acquire(dctx, "b", heavy); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	ra()
}

// TestCancelKeepsOrder cancels a waiter in the middle of the ring: the
// callers after it keep their turns.
func TestCancelKeepsOrder(t *testing.T) {
	g := newGate(t, 1)
	rc := mustAcquire(t, g, "c")
	chA := acquireAsync(g, context.Background(), "a")
	waitFor(t, "a", func() bool { return g.Waiting() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	chB := acquireAsync(g, ctx, "b")
	waitFor(t, "b", func() bool { return g.Waiting() == 2 })
	chD := acquireAsync(g, context.Background(), "d")
	waitFor(t, "d", func() bool { return g.Waiting() == 3 })
	cancel()
	if got := <-chB; got.err == nil {
		t.Fatal("b admitted after its cancel")
	}
	rc()
	a := <-chA
	a.release()
	d := <-chD
	if d.err != nil {
		t.Fatal(d.err)
	}
	d.release()
	if g.Running() != 0 || g.Waiting() != 0 {
		t.Fatalf("running %d, waiting %d", g.Running(), g.Waiting())
	}
}

// TestStress runs many callers' reads with random cancels under -race:
// slots never exceed the bound nor a caller's one, and no goroutine is
// left behind.
func TestStress(t *testing.T) {
	before := runtime.NumGoroutine()
	const slots = 3
	g := newGate(t, slots)
	var mu sync.Mutex
	perCaller := map[string]int{}
	total := 0
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			caller := string(rune('a' + i%7))
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*time.Millisecond+time.Millisecond)
			defer cancel()
			if i%3 == 0 {
				ctx = context.Background()
			}
			r, err := g.Acquire(ctx, caller, heavy)
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Error(err)
				}
				return
			}
			mu.Lock()
			perCaller[caller]++
			total++
			if perCaller[caller] > 1 || total > slots {
				t.Errorf("caller %s holds %d, %d running", caller, perCaller[caller], total)
			}
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			perCaller[caller]--
			total--
			mu.Unlock()
			r()
		}()
	}
	wg.Wait()
	if g.Running() != 0 || g.Waiting() != 0 {
		t.Fatalf("running %d, waiting %d", g.Running(), g.Waiting())
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
