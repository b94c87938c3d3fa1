package http

import (
	"container/list"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimiter caps the connections the server holds open. Every
// connection costs memory and a file descriptor even when idle, so a flood
// of idle connections could otherwise exhaust both and take /healthz down
// with everything else.
//
// At the cap, Accept makes room by closing an idle connection (a
// kept-alive one between requests, or a new one that has not sent a
// complete request head yet): HTTP lets a server close an idle connection
// at any time. Connections that never carried an authenticated request go
// first, longest idle first; a tenant's kept-alive connections only when
// no anonymous one is left. So new clients keep getting in while a flood
// of anonymous idle connections churns, and the flood cannot push out the
// connections tenants are using. When every connection is busy with a
// request, Accept waits for one to finish or turn idle; the clients behind
// the one waiting stay in the kernel's accept queue, costing the process
// nothing.
//
// Past a quarter of the cap the server is under a flood of connections,
// and two rules keep that flood from taking the CPU tenants' requests
// need (on a 2-core machine, 10,000 reconnecting clients took tenants'
// read p99 from 14 ms to 85 ms):
//   - an anonymous connection is closed as soon as its answer is written
//     instead of being kept alive. Tenants' clients authenticate on their
//     first request and keep theirs; anonymous idle connections would hold
//     thousands of goroutines and buffers (about 20 KiB each) that the
//     garbage collector scans again and again.
//   - new connections are accepted at most floodAcceptRate a second. The
//     others wait in the kernel's accept queue, costing nothing, instead
//     of being accepted, answered and closed as fast as a flood can
//     reconnect; a new connection may then wait seconds for its turn,
//     connections already open are not slowed.
type connLimiter struct {
	net.Listener
	max  int
	open prometheus.Gauge
	// acceptEvery is the pace of accepts past a quarter of max.
	acceptEvery time.Duration

	mu   sync.Mutex
	cond *sync.Cond
	n    int // connections open
	// Idle connections, longest idle first: anonymous ones, and those that
	// have carried an authenticated request.
	anonymous, known *list.List
	closed           bool
	nextAccept       time.Time // earliest next accept past a quarter of max
}

// floodAcceptRate is the most connections accepted a second past a
// quarter of MAX_CONNS: far above what tenants' kept-alive clients open,
// and in the benchmark's flood low enough that tenants' reads keep their
// latency (BENCHMARKS.md, fairness 8c: 2,500 and 5,000 both did; a new
// connection's wait during the flood was 3.4 s and 1.4 s at p99).
const floodAcceptRate = 5000

func newConnLimiter(ln net.Listener, max int, open prometheus.Gauge) *connLimiter {
	l := &connLimiter{Listener: ln, max: max, open: open, acceptEvery: time.Second / floodAcceptRate,
		anonymous: list.New(), known: list.New()}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// limitedConn is a connection counted by its connLimiter.
type limitedConn struct {
	net.Conn
	l             *connLimiter
	authenticated atomic.Bool   // has carried an authenticated request
	idle          *list.Element // set while idle; guarded by l.mu
	idleIn        *list.List    // the list idle is in; guarded by l.mu
	gone          bool          // closed; guarded by l.mu
	once          sync.Once
}

func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if err := l.acquire(); err != nil {
		c.Close()
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l}
	l.mu.Lock()
	l.setIdle(lc) // idle until its first request head is read
	l.mu.Unlock()
	return lc, nil
}

// acquire takes a connection slot for a connection just accepted: at the
// cap it evicts an idle connection, or waits while none is idle. Only the
// server's accept loop calls it, so at most one new connection waits here.
func (l *connLimiter) acquire() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.flooded() {
		if wait := time.Until(l.nextAccept); wait > 0 {
			l.mu.Unlock()
			time.Sleep(wait)
			l.mu.Lock()
		}
		l.nextAccept = time.Now().Add(l.acceptEvery)
	}
	for l.n >= l.max {
		if l.closed {
			return net.ErrClosed
		}
		front := l.anonymous.Front()
		if front == nil {
			front = l.known.Front()
		}
		if front != nil {
			victim := front.Value.(*limitedConn)
			l.setBusy(victim)
			l.mu.Unlock()
			_ = victim.Close() // frees its slot
			l.mu.Lock()
			continue
		}
		l.cond.Wait()
	}
	l.n++
	l.open.Set(float64(l.n))
	return nil
}

// flooded reports whether more than a quarter of the cap is open; l.mu is
// held.
func (l *connLimiter) flooded() bool { return l.n > l.max/4 }

func (l *connLimiter) setIdle(lc *limitedConn) {
	if lc.idle != nil {
		return
	}
	lc.idleIn = l.anonymous
	if lc.authenticated.Load() {
		lc.idleIn = l.known
	}
	lc.idle = lc.idleIn.PushBack(lc)
	l.cond.Broadcast() // a waiting Accept may evict it
}

func (l *connLimiter) setBusy(lc *limitedConn) {
	if lc.idle != nil {
		lc.idleIn.Remove(lc.idle)
		lc.idle, lc.idleIn = nil, nil
	}
}

// track follows http.Server's connection states: a connection is idle
// between requests and busy while one is being served.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if lc.gone {
		l.mu.Unlock()
		return
	}
	switch state {
	case http.StateActive:
		l.setBusy(lc)
	case http.StateIdle:
		if !lc.authenticated.Load() && l.flooded() {
			l.mu.Unlock()
			_ = lc.Close() // the server may close an idle connection at any time
			return
		}
		l.setIdle(lc)
	}
	l.mu.Unlock()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		l := c.l
		l.mu.Lock()
		l.setBusy(c)
		c.gone = true
		l.n--
		l.open.Set(float64(l.n))
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	return err
}

func (l *connLimiter) Close() error {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

type ctxConnKey struct{}

// withConn makes a request's connection known to the handlers
// (http.Server.ConnContext).
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, ctxConnKey{}, c)
}

// markAuthenticated records that the request's connection carries an
// authenticated caller, which keeps it from being evicted before
// anonymous idle connections.
func markAuthenticated(ctx context.Context) {
	if lc, ok := ctx.Value(ctxConnKey{}).(*limitedConn); ok {
		lc.authenticated.Store(true)
	}
}
