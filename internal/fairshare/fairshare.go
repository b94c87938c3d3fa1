// Package fairshare shares the database between callers for expensive
// reads. A read declares its weight (days × proxies it covers); reads at
// or below a threshold pass straight through, heavier ones take one of a
// few slots. A caller holds at most one slot at a time, and waiting
// callers are served round-robin, so one caller's queue of year-long
// reports never keeps another caller's heavy read, nor the CPU its cheap
// reads need, waiting behind it.
package fairshare

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultThreshold is the heaviest read that passes straight through, in
// proxy-days: a month of 100 proxies, or a year of 8. Such a read costs a
// few milliseconds of database CPU even on the slow path (a 365-day
// report of 20,000 proxies, 7.3 million proxy-days, takes about 10 s), so
// queueing it would cost more in latency than it saves in sharing.
const DefaultThreshold = 3000

// Gate admits heavy reads: at most Slots at once, one per caller, waiting
// callers served round-robin. A nil *Gate admits everything at once.
type Gate struct {
	slots     int
	threshold int64
	metrics   Metrics

	mu      sync.Mutex
	running int
	holding map[string]bool      // callers holding a slot
	queues  map[string][]*waiter // each waiting caller's reads, oldest first
	ring    []string             // waiting callers in round-robin order
	next    int                  // the ring position served next
}

// New returns a Gate for cfg.
func New(cfg Config) (*Gate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gate{
		slots: cfg.Slots, threshold: cfg.Threshold, metrics: cfg.Metrics,
		holding: map[string]bool{}, queues: map[string][]*waiter{},
	}
	if g.slots == 0 {
		g.slots = runtime.GOMAXPROCS(0)
	}
	if g.threshold == 0 {
		g.threshold = DefaultThreshold
	}
	return g, nil
}

// Config configures a Gate.
type Config struct {
	// Slots is how many heavy reads run at once (0: GOMAXPROCS). With one
	// slot per core, heavy reads of one caller keep at most one core busy.
	Slots int
	// Threshold is the heaviest weight that passes straight through
	// (0: DefaultThreshold).
	Threshold int64
	Metrics   Metrics
}

// Validate checks that no value is negative.
func (c Config) Validate() error {
	var errs []error
	if c.Slots < 0 {
		errs = append(errs, fmt.Errorf("fairshare: Slots (%d) must not be negative", c.Slots))
	}
	if c.Threshold < 0 {
		errs = append(errs, fmt.Errorf("fairshare: Threshold (%d) must not be negative", c.Threshold))
	}
	return errors.Join(errs...)
}

// Metrics are where a Gate reports; nil fields are skipped. They carry no
// caller: series stay bounded.
type Metrics struct {
	Waiting  prometheus.Gauge   // heavy reads waiting for a slot
	Running  prometheus.Gauge   // heavy reads holding a slot
	Admitted prometheus.Counter // heavy reads given a slot
	GaveUp   prometheus.Counter // heavy reads whose context ended while they waited
}

type waiter struct {
	ready   chan struct{} // closed when granted
	granted bool          // under Gate.mu
}

// Acquire admits a read of caller covering weight proxy-days. It returns
// at once for a read at or below the threshold; a heavier one waits for a
// slot, the caller's previous heavy read to finish and its turn among the
// waiting callers, or for ctx to end (the error then wraps ctx.Err(), so
// the transport answers it as it answers a statement cut by the same
// context). release must be called once the read is done; it may be
// called more than once.
func (g *Gate) Acquire(ctx context.Context, caller string, weight int64) (release func(), err error) {
	if g == nil || weight <= g.threshold {
		return func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wait for a heavy-read slot: %w", err)
	}
	g.mu.Lock()
	if g.running < g.slots && !g.holding[caller] {
		// No waiter can be eligible while a slot is free (dispatch would
		// have served it), so taking the slot jumps no queue.
		g.admit(caller)
		g.mu.Unlock()
		return g.releaser(caller), nil
	}
	w := &waiter{ready: make(chan struct{})}
	if len(g.queues[caller]) == 0 {
		g.ring = append(g.ring, caller)
	}
	g.queues[caller] = append(g.queues[caller], w)
	g.add(g.metrics.Waiting, 1)
	g.mu.Unlock()

	select {
	case <-w.ready:
		return g.releaser(caller), nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	if w.granted {
		// Granted as the context ended: give the slot to the next caller
		// rather than start a read nobody waits for.
		g.mu.Unlock()
		g.releaser(caller)()
	} else {
		g.remove(caller, w)
		g.add(g.metrics.Waiting, -1)
		g.mu.Unlock()
	}
	if g.metrics.GaveUp != nil {
		g.metrics.GaveUp.Inc()
	}
	return nil, fmt.Errorf("wait for a heavy-read slot: %w", ctx.Err())
}

// releaser returns the function that frees caller's slot, once.
func (g *Gate) releaser(caller string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.running--
			delete(g.holding, caller)
			g.add(g.metrics.Running, -1)
			g.dispatch()
		})
	}
}

// admit gives caller a slot; g.mu is held.
func (g *Gate) admit(caller string) {
	g.running++
	g.holding[caller] = true
	g.add(g.metrics.Running, 1)
	if g.metrics.Admitted != nil {
		g.metrics.Admitted.Inc()
	}
}

// dispatch grants free slots to waiting callers that hold none, in ring
// order from g.next; g.mu is held.
func (g *Gate) dispatch() {
	for g.running < g.slots {
		served := false
		for i := 0; i < len(g.ring); i++ {
			pos := (g.next + i) % len(g.ring)
			caller := g.ring[pos]
			if g.holding[caller] {
				continue
			}
			q := g.queues[caller]
			w := q[0]
			g.admit(caller)
			w.granted = true
			close(w.ready)
			g.add(g.metrics.Waiting, -1)
			if len(q) == 1 {
				delete(g.queues, caller)
				g.ring = append(g.ring[:pos], g.ring[pos+1:]...)
				g.next = pos // the caller after it moved into pos
			} else {
				q[0] = nil
				g.queues[caller] = q[1:]
				g.next = pos + 1
			}
			if len(g.ring) > 0 {
				g.next %= len(g.ring)
			} else {
				g.next = 0
			}
			served = true
			break
		}
		if !served {
			return
		}
	}
}

// remove drops w from caller's queue, and caller from the ring if that
// empties it; g.mu is held.
func (g *Gate) remove(caller string, w *waiter) {
	q := g.queues[caller]
	for i, x := range q {
		if x == w {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		g.queues[caller] = q
		return
	}
	delete(g.queues, caller)
	for pos, c := range g.ring {
		if c == caller {
			g.ring = append(g.ring[:pos], g.ring[pos+1:]...)
			if pos < g.next {
				g.next--
			}
			break
		}
	}
	if len(g.ring) == 0 || g.next >= len(g.ring) {
		g.next = 0
	}
}

func (g *Gate) add(m prometheus.Gauge, d float64) {
	if m != nil {
		m.Add(d)
	}
}

// Waiting is the number of heavy reads waiting for a slot.
func (g *Gate) Waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, q := range g.queues {
		n += len(q)
	}
	return n
}

// Running is the number of heavy reads holding a slot.
func (g *Gate) Running() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}
