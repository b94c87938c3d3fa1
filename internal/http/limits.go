package http

import (
	"context"
	"net/http"
	"time"

	"golang.org/x/sync/semaphore"

	"proxyusage/internal/apperr"
)

// Load shedding: past these limits the API answers 503 with Retry-After
// instead of queueing without bound, so memory stays bounded under
// overload.
const (
	// DefaultMaxInflight bounds requests being handled at once.
	DefaultMaxInflight = 1024
	// DefaultBodyBudget bounds the request bytes of batch bodies held in
	// memory at once (a batch may be 10 MiB).
	DefaultBodyBudget = 64 << 20
	// bodyBudgetWait is how long a batch waits for budget before shedding.
	bodyBudgetWait = time.Second
)

// limitInflight sheds requests beyond the in-flight limit. Health checks
// and metrics are exempt so operators can still see the service.
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
		defer s.inflight.Release(1)
		next.ServeHTTP(w, r)
	})
}

// reserveBody reserves memory budget for a request body of up to limit
// bytes, waiting briefly. The returned func releases it.
func (s *Server) reserveBody(r *http.Request, limit int64) (func(), error) {
	n := limit
	if r.ContentLength >= 0 && r.ContentLength < limit {
		n = r.ContentLength + 1
	}
	ctx, cancel := context.WithTimeout(r.Context(), bodyBudgetWait)
	defer cancel()
	if err := s.bodies.Acquire(ctx, n); err != nil {
		s.metrics.HTTPShed.Inc()
		return nil, apperr.Errorf(apperr.Unavailable, "server is at capacity, retry later")
	}
	return func() { s.bodies.Release(n) }, nil
}

func newLimits(maxInflight, bodyBudget int64) (*semaphore.Weighted, *semaphore.Weighted) {
	return semaphore.NewWeighted(maxInflight), semaphore.NewWeighted(bodyBudget)
}
