package http

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// readyMaxAge is how old a readiness result /readyz may answer from.
const readyMaxAge = time.Second

// readiness caches the readiness check: /readyz needs no token and is not
// shed, so a flood of probes must not become a flood of database round
// trips. A result is reused for readyMaxAge; callers arriving while a
// check runs share it.
type readiness struct {
	probe  func(context.Context) error
	checks prometheus.Counter

	group singleflight.Group
	mu    sync.Mutex
	at    time.Time // when the cached check started
	err   error
}

func (r *readiness) check(ctx context.Context) error {
	if ok, err := r.cached(); ok {
		return err
	}
	ch := r.group.DoChan("ready", func() (any, error) {
		if ok, err := r.cached(); ok { // another caller just refreshed it
			return err, nil
		}
		started := time.Now()
		r.checks.Inc()
		// Shared by every waiting caller: none of their contexts may end it.
		err := r.probe(context.Background())
		r.mu.Lock()
		r.at, r.err = started, err
		r.mu.Unlock()
		return err, nil
	})
	select {
	case res := <-ch:
		err, _ := res.Val.(error)
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *readiness) cached() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at.IsZero() || time.Since(r.at) >= readyMaxAge {
		return false, nil
	}
	return true, r.err
}
