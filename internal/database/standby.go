package database

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Standby sends the snapshots of read requests to streaming standbys
// without losing read-your-writes. A read request's context is marked with
// Route when the request arrives; the snapshots opened under it (ReadOnly,
// ReadSnapshot, Reads) wait until the standby has replayed the primary's
// WAL up to a fence taken after the request arrived, then read there. Past
// the fence timeout, on a recovery conflict, or when the standby cannot be
// reached, they read on the primary instead: slower, never stale, never an
// error the primary would not have given. Contexts not marked (writes, the
// rollup worker, the alert evaluator) always use the primary.
type Standby struct {
	pool      *pgxpool.Pool
	timeout   time.Duration
	skipFence bool
	metrics   StandbyMetrics
	fence     fencer
	// downUntil (Unix nanoseconds) spares reads the connect attempt while
	// a standby just found unreachable is likely still down.
	downUntil atomic.Int64
}

// StandbyConfig configures a Standby.
type StandbyConfig struct {
	Primary *pgxpool.Pool // where fences are taken
	Standby *pgxpool.Pool // one or more standbys (a multi-host URL)
	// FenceTimeout bounds the wait for the standby (default
	// DefaultFenceTimeout); past it the read goes to the primary.
	FenceTimeout time.Duration
	// SkipFence reads from the standby without waiting. Tests only: it
	// shows that without the fence a read after a write can be stale.
	SkipFence bool
	Metrics   StandbyMetrics
}

// StandbyMetrics are where a Standby reports; nil fields are skipped.
type StandbyMetrics struct {
	Served    *prometheus.CounterVec // server: standby, primary
	FenceWait prometheus.Observer    // seconds from the fence request to the standby reaching it (or giving up)
	Fallbacks *prometheus.CounterVec // reason: FallbackReasons
}

// DefaultFenceTimeout is how long a read waits for its standby by default.
const DefaultFenceTimeout = 200 * time.Millisecond

// Why a routed read went to the primary.
const (
	FallbackTimeout     = "timeout"     // the standby had not replayed the fence in time
	FallbackConflict    = "conflict"    // a recovery conflict cancelled the read (40001, 40P01)
	FallbackUnavailable = "unavailable" // the standby could not be reached or is not in recovery
	FallbackFence       = "fence"       // the primary's WAL position could not be read
)

// FallbackReasons lists the values of the fallback reason label.
var FallbackReasons = []string{FallbackTimeout, FallbackConflict, FallbackUnavailable, FallbackFence}

// standbyDownFor is how long an unreachable standby is skipped.
const standbyDownFor = time.Second

// NewStandby returns a Standby for cfg.
func NewStandby(cfg StandbyConfig) (*Standby, error) {
	var errs []error
	if cfg.Primary == nil {
		errs = append(errs, errors.New("standby: Primary is required"))
	}
	if cfg.Standby == nil {
		errs = append(errs, errors.New("standby: Standby is required"))
	}
	if cfg.FenceTimeout < 0 {
		errs = append(errs, errors.New("standby: FenceTimeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.FenceTimeout == 0 {
		cfg.FenceTimeout = DefaultFenceTimeout
	}
	return &Standby{pool: cfg.Standby, timeout: cfg.FenceTimeout, skipFence: cfg.SkipFence,
		metrics: cfg.Metrics, fence: fencer{primary: cfg.Primary}}, nil
}

// Pool is the standbys' pool.
func (s *Standby) Pool() *pgxpool.Pool { return s.pool }

type routeKey struct{}

// route is one read request's routing: when it arrived, and the fence it
// took, reused by its later snapshots.
type route struct {
	standby *Standby
	arrived time.Time
	mu      sync.Mutex
	fence   string
}

// Route marks ctx as a read request's that arrived now: its snapshots may
// be served by the standby. A nil Standby leaves ctx as it is.
func (s *Standby) Route(ctx context.Context) context.Context {
	if s == nil {
		return ctx
	}
	return context.WithValue(ctx, routeKey{}, &route{standby: s, arrived: time.Now()})
}

func routeFrom(ctx context.Context) *route {
	r, _ := ctx.Value(routeKey{}).(*route)
	return r
}

// onStandby runs read on a standby connection past the request's fence.
// It reports whether the caller must run it on the primary instead (and
// counts why); otherwise err is read's result.
func (r *route) onStandby(ctx context.Context, read func(*pgxpool.Conn) error) (fallback bool, err error) {
	conn, reason := r.acquire(ctx)
	if conn == nil {
		if reason != "" {
			r.fellBack(reason)
		}
		return true, nil
	}
	err = read(conn)
	Release(conn)
	if err != nil && ctx.Err() == nil {
		switch {
		case HasCode(err, SerializationFailure, DeadlockDetected):
			r.fellBack(FallbackConflict)
			return true, nil
		case IsUnavailable(err):
			r.standby.markDown()
			r.fellBack(FallbackUnavailable)
			return true, nil
		}
	}
	r.standby.served("standby")
	return false, err
}

func (r *route) fellBack(reason string) {
	s := r.standby
	if s.metrics.Fallbacks != nil {
		s.metrics.Fallbacks.WithLabelValues(reason).Inc()
	}
	s.served("primary")
}

func (s *Standby) served(server string) {
	if s.metrics.Served != nil {
		s.metrics.Served.WithLabelValues(server).Inc()
	}
}

func (s *Standby) markDown() { s.downUntil.Store(time.Now().Add(standbyDownFor).UnixNano()) }

// acquire returns a standby connection that has replayed the request's
// fence, or nil and the reason to read on the primary ("" when the
// request itself was cancelled: nothing to count, and the primary will
// say so). The fence fetch, the connect and the wait together take at
// most the fence timeout.
func (r *route) acquire(parent context.Context) (conn *pgxpool.Conn, reason string) {
	s := r.standby
	if time.Now().UnixNano() < s.downUntil.Load() {
		return nil, FallbackUnavailable
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	defer cancel()
	defer func() {
		if conn == nil && parent.Err() != nil {
			reason = ""
		}
	}()
	timedOut := func() bool { return ctx.Err() != nil && parent.Err() == nil }
	var fence string
	if !s.skipFence {
		var err error
		if fence, err = r.fenceLSN(ctx); err != nil {
			if timedOut() {
				s.observeWait(start)
				return nil, FallbackTimeout
			}
			return nil, FallbackFence
		}
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		switch {
		case timedOut():
			s.observeWait(start)
			return nil, FallbackTimeout
		case parent.Err() == nil:
			s.markDown()
		}
		return nil, FallbackUnavailable
	}
	if s.skipFence {
		return conn, ""
	}
	for pause := 500 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		var reached *bool
		err := conn.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, fence).Scan(&reached)
		switch {
		case err != nil && timedOut():
			Release(conn)
			s.observeWait(start)
			return nil, FallbackTimeout
		case err != nil && parent.Err() == nil:
			Release(conn)
			s.markDown()
			return nil, FallbackUnavailable
		case err != nil:
			Release(conn)
			return nil, ""
		case reached == nil:
			// Not in recovery (READ_DATABASE_URL names a primary, or a
			// promoted standby): its WAL is not the primary's.
			Release(conn)
			s.markDown()
			return nil, FallbackUnavailable
		case *reached:
			s.observeWait(start)
			return conn, ""
		}
		select {
		case <-ctx.Done():
			Release(conn)
			s.observeWait(start)
			return nil, FallbackTimeout
		case <-time.After(pause):
		}
	}
}

func (s *Standby) observeWait(start time.Time) {
	if s.metrics.FenceWait != nil {
		s.metrics.FenceWait.Observe(time.Since(start).Seconds())
	}
}

// fenceLSN is the primary's WAL position read after the request arrived:
// the request's own earlier one if it has one, else a shared fetch.
func (r *route) fenceLSN(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fence != "" {
		return r.fence, nil
	}
	lsn, err := r.standby.fence.after(ctx, r.arrived)
	if err != nil {
		return "", err
	}
	r.fence = lsn
	return lsn, nil
}

// fencer reads the primary's WAL position for many reads at once. A
// read may use a fetch only if it started after the read's request
// arrived: a position read earlier may precede the commit the client saw
// acknowledged before sending the request. One fetch runs at a time; the
// requests arriving meanwhile share the next one, started when it ends.
type fencer struct {
	primary *pgxpool.Pool
	mu      sync.Mutex
	latest  *fenceFetch // the fetch started last, running or done
	queued  *fenceFetch // starts when latest is done
	fetches atomic.Int64
}

type fenceFetch struct {
	started time.Time // zero until it starts
	running bool
	done    chan struct{}
	lsn     string
	err     error
}

// fenceFetchTimeout bounds one fetch; each waiter has its own deadline.
const fenceFetchTimeout = 5 * time.Second

func (f *fencer) after(ctx context.Context, arrived time.Time) (string, error) {
	f.mu.Lock()
	var c *fenceFetch
	switch {
	case f.latest != nil && f.latest.started.After(arrived):
		c = f.latest
	case f.queued != nil:
		c = f.queued
	case f.latest != nil && f.latest.running:
		c = &fenceFetch{done: make(chan struct{})}
		f.queued = c
	default:
		c = &fenceFetch{done: make(chan struct{})}
		f.start(c)
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.lsn, c.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// start runs c; f.mu is held.
func (f *fencer) start(c *fenceFetch) {
	c.started, c.running = time.Now(), true
	f.latest = c
	f.fetches.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), fenceFetchTimeout)
		err := f.primary.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&c.lsn)
		cancel()
		f.mu.Lock()
		defer f.mu.Unlock()
		c.err, c.running = err, false
		close(c.done)
		if q := f.queued; q != nil {
			f.queued = nil
			f.start(q)
		}
	}()
}

// Reads is a Querier for single-statement reads: in a routed read
// request its QueryRow runs on the standby past the fence (or on the
// primary, as ReadOnly decides), elsewhere on pool.
func Reads(pool *pgxpool.Pool) Querier { return reads{pool} }

// Querier runs a single-row query.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type reads struct{ pool *pgxpool.Pool }

func (q reads) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if routeFrom(ctx) == nil {
		return q.pool.QueryRow(ctx, sql, args...)
	}
	return routedRow{ctx: ctx, pool: q.pool, sql: sql, args: args}
}

// routedRow runs its statement when scanned: Scan overwrites every
// destination, so a second run on the primary after a failed standby is
// harmless.
type routedRow struct {
	ctx  context.Context
	pool *pgxpool.Pool
	sql  string
	args []any
}

func (r routedRow) Scan(dest ...any) error {
	if fallback, err := routeFrom(r.ctx).onStandby(r.ctx, func(c *pgxpool.Conn) error {
		return c.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...)
	}); !fallback {
		return err
	}
	return r.pool.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...)
}
