package http

import (
	"container/list"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimiter caps the connections the server holds open. Every
// connection costs memory and a file descriptor even when idle, so a flood
// of idle connections could otherwise exhaust both and take /healthz down
// with everything else.
//
// At the cap, Accept makes room by closing the connection that has been
// idle longest (a kept-alive connection between requests, or a new one
// that has not sent a complete request head yet): HTTP lets a server close
// an idle connection at any time, and a client that is using its
// connection is never the longest idle, so new clients keep getting in
// while a flood of idle connections churns. When every connection is busy
// with a request, Accept waits for one to finish or turn idle; the clients
// behind the one waiting stay in the kernel's accept queue, costing the
// process nothing.
type connLimiter struct {
	net.Listener
	max  int
	open prometheus.Gauge

	mu     sync.Mutex
	cond   *sync.Cond
	n      int        // connections open
	idle   *list.List // of *limitedConn, longest idle first
	closed bool
}

func newConnLimiter(ln net.Listener, max int, open prometheus.Gauge) *connLimiter {
	l := &connLimiter{Listener: ln, max: max, open: open, idle: list.New()}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// limitedConn is a connection counted by its connLimiter.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	idle *list.Element // set while idle; guarded by l.mu
	gone bool          // closed; guarded by l.mu
	once sync.Once
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
	lc.idle = l.idle.PushBack(lc) // idle until its first request head is read
	l.mu.Unlock()
	return lc, nil
}

// acquire takes a connection slot for a connection just accepted: at the
// cap it evicts the longest-idle connection, or waits while none is idle.
// Only the server's accept loop calls it, so at most one new connection
// waits here.
func (l *connLimiter) acquire() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.n >= l.max {
		if l.closed {
			return net.ErrClosed
		}
		if front := l.idle.Front(); front != nil {
			victim := front.Value.(*limitedConn)
			l.idle.Remove(front)
			victim.idle = nil
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

// track follows http.Server's connection states: a connection is idle
// between requests and busy while one is being served.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.gone {
		return
	}
	switch state {
	case http.StateActive:
		if lc.idle != nil {
			l.idle.Remove(lc.idle)
			lc.idle = nil
		}
	case http.StateIdle:
		if lc.idle == nil {
			lc.idle = l.idle.PushBack(lc)
			l.cond.Broadcast() // a waiting Accept may evict it
		}
	}
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		l := c.l
		l.mu.Lock()
		if c.idle != nil {
			l.idle.Remove(c.idle)
			c.idle = nil
		}
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
