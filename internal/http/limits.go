package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
)

// Limits that keep one client or tenant from taking the service from the
// others. Past a limit the API answers at once (503, 429, 408) instead of
// queueing without bound, so memory and latency stay bounded.
const (
	// DefaultMaxInflight bounds requests being handled at once.
	DefaultMaxInflight = 1024
	// DefaultMaxInflightPerUser bounds one caller's (JWT sub) requests in
	// flight; DefaultMaxInflightPerService is the same for callers with
	// the service role (the proxy fleet's ingest).
	DefaultMaxInflightPerUser    = 32
	DefaultMaxInflightPerService = 512
	// DefaultBodyBudget bounds the request-body bytes held in memory at
	// once, over all requests (a batch may be 10 MiB).
	DefaultBodyBudget = 64 << 20
	// DefaultBodyTimeout is how long a request body may take to arrive.
	DefaultBodyTimeout = 15 * time.Second
	// DefaultReadTimeout bounds a read request (GET), its database
	// statements included.
	DefaultReadTimeout = 10 * time.Second
	// DefaultRequestTimeout bounds a write's work once its body arrived.
	DefaultRequestTimeout = 15 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxConns bounds open client connections.
	DefaultMaxConns = 4096

	// bodyBudgetWait is how long a body read waits for budget before the
	// request is shed.
	bodyBudgetWait = time.Second
	// retryAfter is the Retry-After (seconds) of 429 and 503 answers.
	retryAfter = 1
	// StatusClientClosedRequest is recorded (access log, metrics) for a
	// request whose client went away before the answer: not a server
	// error. The number is nginx's; nothing is sent, nobody is listening.
	StatusClientClosedRequest = 499
)

// limitInflight sheds requests beyond the global in-flight limit. Health
// checks and metrics are exempt so operators can still see the service.
func (s *Server) limitInflight(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			next.ServeHTTP(w, r)
			return
		}
		if !s.inflight.TryAcquire(1) {
			s.metrics.HTTPShed.Inc()
			Error(w, r, apperr.Errorf(apperr.Unavailable, "server is at capacity, retry later"))
			return
		}
		s.metrics.HTTPInflight.Inc()
		defer func() {
			s.metrics.HTTPInflight.Dec()
			s.inflight.Release(1)
		}()
		next.ServeHTTP(w, r)
	})
}

// callerLimiter counts each caller's requests in flight. An entry lives
// only while its count is above zero, so the map never holds more entries
// than there are requests in flight.
type callerLimiter struct {
	user, service int
	mu            sync.Mutex
	counts        map[string]int
}

func newCallerLimiter(user, service int) *callerLimiter {
	return &callerLimiter{user: user, service: service, counts: map[string]int{}}
}

func (l *callerLimiter) limitOf(p auth.Principal) int {
	if slices.Contains(p.Roles, auth.RoleService) {
		return l.service
	}
	return l.user
}

// acquire takes one of p's slots; false when p has none left.
func (l *callerLimiter) acquire(p auth.Principal) bool {
	limit := l.limitOf(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts[p.UserID] >= limit {
		return false
	}
	l.counts[p.UserID]++
	return true
}

func (l *callerLimiter) release(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.counts[id] - 1; n > 0 {
		l.counts[id] = n
	} else {
		delete(l.counts, id)
	}
}

// tracked is the number of callers with requests in flight.
func (l *callerLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.counts)
}

// limitPerCaller answers 429 when the authenticated caller already has its
// limit of requests in flight, so one tenant cannot take every slot of the
// global limit from the others.
func (s *Server) limitPerCaller(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := caller(r)
		if !s.callers.acquire(p) {
			Error(w, r, apperr.Errorf(apperr.TooManyRequests,
				"too many requests in flight for this caller (limit %d), retry later", s.callers.limitOf(p)))
			return
		}
		defer s.callers.release(p.UserID)
		next.ServeHTTP(w, r)
	})
}

// bodyAccount is one request's share of the body budget: bytes are
// reserved as they arrive (never from the declared Content-Length), so
// clients that declare large bodies and trickle bytes hold almost nothing.
// Only the handler's goroutine reads the body; guardBody releases the
// reservation when the handler returns.
type bodyAccount struct {
	sem     *semaphore.Weighted
	held    int64
	timeout time.Duration
	shed    func()
}

type ctxBodyKey struct{}

// guardBody gives a request body BodyTimeout to arrive (a read deadline on
// the connection, past which reading fails and the answer is 408) and
// meters the memory its bytes take. It runs before any other limit, so a
// shed request's unread body is bounded too.
func (s *Server) guardBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		// Fails only for writers without deadlines (none in the server).
		// net/http lifts the deadline itself once the body has been read
		// to its end, so the work after the upload is not cut by it.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		acct := &bodyAccount{sem: s.bodies, timeout: s.cfg.BodyTimeout, shed: s.metrics.HTTPShed.Inc}
		defer acct.release()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxBodyKey{}, acct)))
	})
}

// reserve takes n more bytes of the budget, waiting briefly for it.
func (a *bodyAccount) reserve(ctx context.Context, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, bodyBudgetWait)
	defer cancel()
	if err := a.sem.Acquire(ctx, n); err != nil {
		a.shed()
		return apperr.Errorf(apperr.Unavailable, "server is at capacity, retry later")
	}
	a.held += n
	return nil
}

func (a *bodyAccount) release() {
	if a.held > 0 {
		a.sem.Release(a.held)
		a.held = 0
	}
}

// firstBodyChunk is the buffer a body starts with; it doubles as bytes
// arrive.
const firstBodyChunk = 16 << 10

// readBodyBytes reads r.Body up to limit bytes. The buffer grows by
// doubling only when it is full, and each growth is reserved from the
// request's bodyAccount first (when there is one), so what a body holds
// is at most twice what has arrived.
func readBodyBytes(r *http.Request, limit int64) ([]byte, error) {
	acct, _ := r.Context().Value(ctxBodyKey{}).(*bodyAccount)
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, apperr.Errorf(apperr.TooLarge, "request body is larger than %d bytes", limit)
			}
			size := min(max(2*int64(cap(buf)), firstBodyChunk), limit+1)
			if declared := r.ContentLength; declared >= 0 && declared+1 > int64(cap(buf)) {
				size = min(size, declared+1) // +1: room to see the end
			}
			if acct != nil {
				if err := acct.reserve(r.Context(), size-int64(cap(buf))); err != nil {
					return nil, err
				}
			}
			grown := make([]byte, len(buf), size)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			if int64(len(buf)) > limit {
				return nil, apperr.Errorf(apperr.TooLarge, "request body is larger than %d bytes", limit)
			}
			return buf, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			timeout := DefaultBodyTimeout
			if acct != nil {
				timeout = acct.timeout
			}
			return nil, apperr.Errorf(apperr.Timeout, "the request body did not arrive within %s", timeout)
		case err != nil:
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
}

func newLimits(maxInflight, bodyBudget int64) (*semaphore.Weighted, *semaphore.Weighted) {
	return semaphore.NewWeighted(maxInflight), semaphore.NewWeighted(bodyBudget)
}
