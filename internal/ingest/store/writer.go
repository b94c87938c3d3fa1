// Package store is the storage of ingest: the group-commit Writer (the
// flush statements, the idempotency-key claim, the rollup deltas appended
// in the same commit), the one mapping of an ingest.Event to a
// usage_events row, and the KeyPruner that forgets keys older than the
// dedup window. It imports the domain (ingest.Event, ingest.Authorize)
// and implements ingest.Store.
package store

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/ingest"
	"proxyusage/internal/proxy"
	"proxyusage/internal/telemetry"
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	// PoolConfig is copied for the writer's own connections.
	PoolConfig *pgxpool.Config
	Metrics    *telemetry.Metrics
	Logger     *slog.Logger

	Writers        int           // concurrent flushes (default 2)
	QueueSize      int           // requests waiting before load is shed (default 4096)
	MaxFlushEvents int           // events per transaction (default 50,000)
	FlushTimeout   time.Duration // per transaction (default 10s)

	// RollupLag, when set, says how far the rollups lag behind ingest
	// (rollup.Backlog); past LagBound (default 5s) each flush first waits
	// (backpressureDelay), so that ingest cannot starve the rollup worker
	// and the lag stays bounded however fast clients send.
	RollupLag func(context.Context) (time.Duration, error)
	LagBound  time.Duration
}

func (c *WriterConfig) validate() error {
	var errs []error
	if c.PoolConfig == nil {
		errs = append(errs, errors.New("ingest: PoolConfig is required"))
	}
	if c.Metrics == nil {
		errs = append(errs, errors.New("ingest: Metrics is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("ingest: Logger is required"))
	}
	return errors.Join(errs...)
}

// Writer is the group-commit writer: requests queue their events, a few
// flushing loops each take everything waiting and write it in one
// transaction, and acknowledge every request after the commit.
//
// A flush starts with BEGIN and the authorisation lookup of every proxy in
// it (one round trip), decides in memory which requests may write and
// which events are candidates (keyless ones and the first occurrence of
// each idempotency key), then either, for a small flush, runs one
// statement that claims the keys, stores the events with a fresh key and
// logs the rollup deltas, pipelined with COMMIT; or, for a large one,
// claims the keys with a plain INSERT (falling back to ON CONFLICT DO
// NOTHING ... RETURNING after a rollback to savepoint when one is a
// repeat), COPYs the events straight into usage_events and logs the
// rollup deltas with COMMIT. The database, not process memory, decides
// duplicates across flushes and replicas: concurrent flushes claiming one
// key serialise on its primary key, and keys are claimed in sorted order
// so they cannot deadlock.
type Writer struct {
	cfg   WriterConfig
	pool  *pgxpool.Pool
	log   *slog.Logger
	queue chan *pending

	ctx        context.Context // Start's, without its cancellation: the flushes' parent
	stopOnDone func() bool     // unregisters Start's close on ctx done

	mu sync.RWMutex // held to close the queue, read-held to send on it
	wg sync.WaitGroup

	lastFlush atomic.Int64 // unix nanoseconds of the latest flush start

	lag    atomic.Int64  // the rollups' lag last read, in nanoseconds
	closed chan struct{} // closed with the queue, under mu: waits end at once
}

type pending struct {
	events []ingest.Event
	// caller must be allowed to write every event's proxy; the
	// check runs inside the flush, against the proxies as they are then.
	caller auth.Principal
	batch  bool         // denials name the event's index
	done   chan outcome // buffered: the writer never blocks on a gone caller
}

type outcome struct {
	accepted int
	denied   bool // err is the authorisation failure; nothing was written
	err      error
}

var _ ingest.Store = (*Writer)(nil)

// NewWriter validates cfg and opens the writer's connection pool.
func NewWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Writers = cmp.Or(cfg.Writers, 2)
	cfg.QueueSize = cmp.Or(cfg.QueueSize, 4096)
	cfg.MaxFlushEvents = cmp.Or(cfg.MaxFlushEvents, 50_000)
	cfg.FlushTimeout = cmp.Or(cfg.FlushTimeout, 10*time.Second)
	cfg.LagBound = cmp.Or(cfg.LagBound, 5*time.Second)

	pc := cfg.PoolConfig.Copy()
	pc.MaxConns = int32(cfg.Writers)
	pc.MinConns = 0
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("ingest: writer pool: %w", err)
	}
	return &Writer{
		cfg:    cfg,
		pool:   pool,
		log:    cfg.Logger.With(slog.String("component", "ingest.writer")),
		queue:  make(chan *pending, cfg.QueueSize),
		closed: make(chan struct{}),
	}, nil
}

// Pool is the writer's own connection pool (for metrics).
func (w *Writer) Pool() *pgxpool.Pool { return w.pool }

// Start launches the flushing loops. They run until Stop, or until ctx is
// done, and either way first flush everything already queued: a request
// is answered only after its commit, so a flush is not cut short by ctx
// (it has its own FlushTimeout) but sees ctx's values.
func (w *Writer) Start(ctx context.Context) {
	w.ctx = context.WithoutCancel(ctx)
	w.stopOnDone = context.AfterFunc(ctx, w.close)
	if w.cfg.RollupLag != nil {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.watchLag()
		}()
	}
	for range w.cfg.Writers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.loop()
		}()
	}
}

// Stop refuses new writes, flushes everything queued and waits for it.
func (w *Writer) Stop() {
	if w.stopOnDone != nil {
		w.stopOnDone()
	}
	w.close()
	w.wg.Wait()
	w.pool.Close()
}

// close refuses new writes and lets the loops end once the queue is empty.
func (w *Writer) close() {
	w.mu.Lock()
	if !w.isClosed() {
		close(w.queue)
		close(w.closed)
	}
	w.mu.Unlock()
}

// isClosed says whether close ran; callers hold mu.
func (w *Writer) isClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}

// WriteAs stores events durably for a caller who must be allowed to record
// into every event's proxy (proxy.CheckWritable), and returns how many were
// new (the rest were duplicates). It returns only after the commit, or with
// an error when the queue is full or the database cannot be reached; an
// error does not guarantee the events were not stored, so clients retry
// with eventIds. The check runs in the flush's
// transaction; the first event that fails it fails the request (with its
// index when batch), nothing of the request is stored, and denied is true.
func (w *Writer) WriteAs(ctx context.Context, caller auth.Principal, events []ingest.Event, batch bool) (accepted int, denied bool, err error) {
	o, err := w.submit(ctx, &pending{events: events, caller: caller, batch: batch})
	return o.accepted, o.denied, err
}

func (w *Writer) submit(ctx context.Context, p *pending) (outcome, error) {
	p.done = make(chan outcome, 1)
	w.mu.RLock()
	if w.isClosed() {
		w.mu.RUnlock()
		return outcome{}, apperr.Errorf(apperr.Unavailable, "service is shutting down")
	}
	select {
	case w.queue <- p:
		w.cfg.Metrics.IngestQueueDepth.Set(float64(len(w.queue)))
		w.mu.RUnlock()
	default:
		w.mu.RUnlock()
		w.cfg.Metrics.IngestShed.Inc()
		return outcome{}, apperr.Errorf(apperr.Unavailable, "ingest queue is full, retry later")
	}
	select {
	case o := <-p.done:
		return o, o.err
	case <-ctx.Done():
		return outcome{}, apperr.Errorf(apperr.Unavailable, "event not confirmed in time, retry with the same eventId")
	}
}

func (w *Writer) loop() {
	for {
		first, ok := <-w.queue
		if !ok {
			return
		}
		batch := []*pending{first}
		n := len(first.events)
	gather:
		for n < w.cfg.MaxFlushEvents {
			select {
			case p, ok := <-w.queue:
				if !ok {
					break gather
				}
				batch = append(batch, p)
				n += len(p.events)
			default:
				break gather
			}
		}
		w.cfg.Metrics.IngestQueueDepth.Set(float64(len(w.queue)))
		w.holdBack()
		w.lastFlush.Store(time.Now().UnixNano())
		w.flushAll(batch)
	}
}

// watchLag reads the rollups' lag every lagPoll until the writer closes.
// A failed read keeps the last value: the flush itself reports a database
// that cannot be reached.
func (w *Writer) watchLag() {
	t := time.NewTicker(lagPoll)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(w.ctx, lagPoll)
		if lag, err := w.cfg.RollupLag(ctx); err == nil {
			w.lag.Store(int64(lag))
		}
		cancel()
		select {
		case <-w.closed:
			return
		case <-t.C:
		}
	}
}

const lagPoll = 250 * time.Millisecond

// holdBack waits before a flush while the rollups lag past LagBound: the
// flushes that follow gather more events each (cheaper per event), ingest
// slows, and the worker gets the database time it needs. Requests wait
// meanwhile; a full queue sheds load with 503 as always. A closing writer
// does not wait.
func (w *Writer) holdBack() {
	d := backpressureDelay(time.Duration(w.lag.Load()), w.cfg.LagBound)
	if d <= 0 {
		return
	}
	w.cfg.Metrics.IngestHeldBack.Add(d.Seconds())
	select {
	case <-time.After(d):
	case <-w.closed:
	}
}

// backpressureDelay is the wait before a flush at a rollup lag of lag:
// none up to bound, then a second a flush for each bound of excess, at
// most 2 s. Steep, because a delayed flush gathers what waited meanwhile:
// with a client's batch in flight each, clients only slow down once the
// wait is long next to a flush (BENCHMARKS.md, live ingest (12)).
func backpressureDelay(lag, bound time.Duration) time.Duration {
	if lag <= bound || bound <= 0 {
		return 0
	}
	return min(time.Duration(float64(lag-bound)/float64(bound)*float64(time.Second)), 2*time.Second)
}

// Active reports whether the writer flushed within the last window.
func (w *Writer) Active(window time.Duration) bool {
	return time.Since(time.Unix(0, w.lastFlush.Load())) < window
}

// flushAll writes batch in one transaction. If that fails for a reason
// other than the database being unreachable, each request is retried on
// its own so one bad request cannot fail its neighbours.
func (w *Writer) flushAll(batch []*pending) {
	outs, err := w.flush(batch)
	if err != nil && len(batch) > 1 && !unavailable(err) {
		for _, p := range batch {
			w.flushAll([]*pending{p})
		}
		return
	}
	for i, p := range batch {
		if err != nil {
			p.done <- outcome{err: clientError(err)}
			continue
		}
		p.done <- outs[i]
	}
}

// flush runs one transaction, retrying on deadlock or serialization
// failure, and returns each request's outcome.
func (w *Writer) flush(batch []*pending) ([]outcome, error) {
	var outs []outcome
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		outs, err = w.flushOnce(batch)
		if !retryable(err) {
			break
		}
	}
	result := "ok"
	if err != nil {
		result = "error"
		if !errors.Is(err, context.Canceled) {
			w.log.Error("flush failed", slog.Int("requests", len(batch)), slog.Any("error", err))
		}
	}
	w.cfg.Metrics.IngestFlushes.WithLabelValues(result).Inc()
	return outs, err
}

// smallFlush is the largest flush written by a single statement; larger
// ones claim keys, COPY and log in separate steps, which costs a round
// trip more but less database time per event.
const smallFlush = 256

// Statements of a flush.
const (
	lookupProxies = `SELECT id, user_id, archived_at FROM proxies WHERE id = ANY($1)`

	// claimKeys claims keys that are, almost always, new: a plain insert is
	// about half the work of ON CONFLICT. Any repeat fails it, and the flush
	// claims again with claimKeysReturning after a rollback to savepoint.
	// $1 holds the distinct keys (EventKey), sorted.
	claimKeys = `
INSERT INTO usage_event_keys (key, received_at)
SELECT key, now() FROM unnest($1::uuid[]) AS k(key)`
	claimKeysReturning = claimKeys + `
ON CONFLICT DO NOTHING
RETURNING key`

	// LogConnections appends connection events ($1 proxies, $2
	// connection ids, $3 instants, $4 is-start flags, $5 the proxies'
	// owners) to the connection log, where pairing reads them
	// (sql/0021_connection_log_events.sql): a row per user with the
	// entries as parallel arrays (a row per entry costs several times
	// more; a row per user lets a read find its own,
	// sql/0015_connection_log_by_user.sql). The rollup deltas are COPYed,
	// a row per user too (DeltaRow.CopyRow).
	LogConnections = `
INSERT INTO usage_connection_invalidations (user_id, proxy_ids, connection_ids, times, is_starts)
SELECT k.user_id, array_agg(k.proxy_id ORDER BY k.n), array_agg(k.connection_id ORDER BY k.n),
       array_agg(k.time ORDER BY k.n), array_agg(k.is_start ORDER BY k.n)
  FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::boolean[], $5::text[]) WITH ORDINALITY
       AS k(proxy_id, connection_id, time, is_start, user_id, n)
 GROUP BY k.user_id`
)

// flushStatement writes a small flush at once: it claims the keys, stores
// the events without a key or with a fresh one, logs the rollup deltas and
// returns the stored count per request. $1 holds the distinct keys
// (sorted), $2 each candidate's key (NULL when keyless), $3 the
// candidates' requests and $4.. the candidates (keyed ones once: the first
// occurrence) as eventArrays.
var flushStatement = `
WITH fresh AS (` + claimKeysReturning + `
), ev AS (
  SELECT * FROM ` + unnestEvents(2) + `
), chosen AS (
  SELECT e.* FROM ev e WHERE e.key IS NULL
  UNION ALL
  SELECT e.* FROM ev e JOIN fresh f ON f.key = e.key
), stored AS (
  INSERT INTO usage_events (` + strings.Join(EventColumns, ", ") + `)
  SELECT ` + strings.Join(EventColumns, ", ") + ` FROM chosen
), ` + deltaCTEs + `, conns AS (
  INSERT INTO usage_connection_invalidations (user_id, proxy_ids, connection_ids, times, is_starts)
  SELECT p.user_id, array_agg(c.proxy_id), array_agg(c.connection_id), array_agg(c.time), array_agg(c.event_type = 'connection_start')
    FROM chosen c JOIN proxies p ON p.id = c.proxy_id
   WHERE c.event_type IN ('connection_start', 'connection_end')
   GROUP BY p.user_id
)
SELECT req, count(*)::int FROM chosen GROUP BY req`

// flushState is what one flush works out in memory.
type flushState struct {
	outs  []outcome
	live  []bool          // requests that passed authorisation
	keys  []pgtype.UUID   // distinct idempotency keys of the live requests, sorted
	evKey []pgtype.UUID   // key of each candidate; not Valid when keyless
	ev    []*ingest.Event // candidates: keyless events and first occurrences of keys
	req   []int32         // request of each candidate

	chosenReq []int32 // requests of the chosen events, when some were repeats
	found     map[string]proxy.Proxy
}

// owner is the user of a proxy the flush writes to (authorised, so found).
func (st *flushState) owner(proxyID string) string { return st.found[proxyID].UserID }

func (w *Writer) flushOnce(batch []*pending) (outs []outcome, err error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.FlushTimeout)
	defer cancel()
	start := time.Now()

	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// The flush pipelines its own BEGIN and COMMIT; Release ends whatever
	// transaction a failure leaves open.
	defer database.Release(conn)
	c := conn.Conn()

	total := 0
	var ids []string
	seen := map[string]struct{}{}
	for _, p := range batch {
		total += len(p.events)
		for i := range p.events {
			if _, ok := seen[p.events[i].ProxyID]; !ok {
				seen[p.events[i].ProxyID] = struct{}{}
				ids = append(ids, p.events[i].ProxyID)
			}
		}
	}
	small := total <= smallFlush

	// 1. BEGIN, and the proxies every request writes to, as of now.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if len(ids) > 0 {
		b.Queue(lookupProxies, ids)
	}
	if !small {
		b.Queue("SAVEPOINT claim")
	}
	br := c.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, fmt.Errorf("begin: %w", err)
	}
	found := make(map[string]proxy.Proxy, len(ids))
	if len(ids) > 0 {
		rows, err := br.Query()
		if err == nil {
			var p proxy.Proxy
			_, err = pgx.ForEachRow(rows, []any{&p.ID, &p.UserID, &p.ArchivedAt}, func() error {
				found[p.ID] = p
				return nil
			})
		}
		if err != nil {
			br.Close()
			return nil, fmt.Errorf("authorize: %w", err)
		}
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	st := &flushState{outs: make([]outcome, len(batch)), live: make([]bool, len(batch))}
	st.authorize(batch, found)
	st.candidates(batch)

	var written int
	if small {
		written, err = st.writeSmall(ctx, c)
	} else {
		written, err = st.writeLarge(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	if database.InTransaction(c) {
		return nil, errors.New("commit: transaction still open")
	}
	w.cfg.Metrics.IngestFlushTime.Observe(time.Since(start).Seconds())
	w.cfg.Metrics.IngestFlushEvents.Observe(float64(written))
	return st.outs, nil
}

// writeSmall writes the flush with flushStatement and commits: one round
// trip.
func (st *flushState) writeSmall(ctx context.Context, c *pgx.Conn) (int, error) {
	b := &pgx.Batch{}
	if len(st.ev) > 0 {
		b.Queue(flushStatement, append([]any{st.keys, st.evKey, st.req}, eventArrays(st.ev)...)...)
	}
	b.Queue("COMMIT")
	br := c.SendBatch(ctx, b)
	defer br.Close()
	written := 0
	if len(st.ev) > 0 {
		counts := make([]int, len(st.outs))
		rows, err := br.Query()
		if err == nil {
			var r, n int32
			_, err = pgx.ForEachRow(rows, []any{&r, &n}, func() error {
				counts[r] = int(n)
				written += int(n)
				return nil
			})
		}
		if err != nil {
			return 0, fmt.Errorf("flush: %w", err)
		}
		for r := range st.outs {
			if st.live[r] {
				st.outs[r] = outcome{accepted: counts[r]}
			}
		}
	}
	if _, err := br.Exec(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return written, br.Close()
}

// writeLarge claims the keys, COPYs the events and logs, then commits.
func (st *flushState) writeLarge(ctx context.Context, c *pgx.Conn) (int, error) {
	chosen := st.ev
	if len(st.keys) > 0 {
		_, err := c.Exec(ctx, claimKeys, st.keys)
		switch {
		case database.HasCode(err, database.UniqueViolation): // a repeat: claim the fresh ones only
			if _, err := c.Exec(ctx, "ROLLBACK TO SAVEPOINT claim"); err != nil {
				return 0, fmt.Errorf("claim keys: %w", err)
			}
			fresh, err := claimFresh(ctx, c, st.keys)
			if err != nil {
				return 0, err
			}
			chosen = st.fresh(fresh)
		case err != nil:
			return 0, fmt.Errorf("claim keys: %w", err)
		}
	}
	counts := make([]int, len(st.outs))
	req := st.req
	if len(chosen) != len(st.ev) {
		req = st.chosenReq
	}
	for _, r := range req {
		counts[r]++
	}
	for r := range st.outs {
		if st.live[r] {
			st.outs[r] = outcome{accepted: counts[r]}
		}
	}
	if len(chosen) > 0 {
		if _, err := c.CopyFrom(ctx, pgx.Identifier{"usage_events"}, EventColumns, CopySource(chosen)); err != nil {
			return 0, fmt.Errorf("copy events: %w", err)
		}
		if _, err := c.CopyFrom(ctx, pgx.Identifier{"usage_rollup_deltas"}, DeltaColumns, DeltaSource(Deltas(chosen).ByUser(st.owner))); err != nil {
			return 0, fmt.Errorf("copy rollup deltas: %w", err)
		}
	}
	b := &pgx.Batch{}
	if len(chosen) > 0 {
		if ce := ConnectionEventsOf(chosen, st.owner); len(ce.ProxyIDs) > 0 {
			b.Queue(LogConnections, ce.Args()...)
		}
	}
	b.Queue("COMMIT")
	br := c.SendBatch(ctx, b)
	defer br.Close()
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			return 0, fmt.Errorf("commit: %w", err)
		}
	}
	return len(chosen), br.Close()
}

// claimFresh claims keys with ON CONFLICT DO NOTHING and returns the ones
// this flush claimed.
func claimFresh(ctx context.Context, c *pgx.Conn, keys []pgtype.UUID) (map[[16]byte]bool, error) {
	fresh := make(map[[16]byte]bool, len(keys))
	rows, err := c.Query(ctx, claimKeysReturning, keys)
	if err != nil {
		return nil, fmt.Errorf("claim keys: %w", err)
	}
	var k [16]byte
	_, err = pgx.ForEachRow(rows, []any{&k}, func() error {
		fresh[k] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim keys: %w", err)
	}
	return fresh, nil
}

// fresh returns the candidates to store once some keys turned out to be
// repeats: keyless events and those whose key is in fresh. chosenReq
// holds their requests.
func (st *flushState) fresh(fresh map[[16]byte]bool) []*ingest.Event {
	var out []*ingest.Event
	st.chosenReq = st.chosenReq[:0]
	for i, e := range st.ev {
		if k := st.evKey[i]; k.Valid && !fresh[k.Bytes] {
			continue
		}
		out = append(out, e)
		st.chosenReq = append(st.chosenReq, st.req[i])
	}
	return out
}

// authorize runs ingest.Authorize on each request against the proxies
// found; a refused request is not live.
func (st *flushState) authorize(batch []*pending, found map[string]proxy.Proxy) {
	st.found = found
	for r, p := range batch {
		if err := ingest.Authorize(p.caller, p.events, found, p.batch); err != nil {
			st.outs[r] = outcome{denied: true, err: err}
			continue
		}
		st.live[r] = true
	}
}

// candidates lists the live requests' events that may be stored: every
// keyless event, and the first occurrence of each key (later ones, in the
// same request or a later one of the flush, are duplicates). The distinct
// keys are sorted, so concurrent flushes claim them in one order and
// cannot deadlock.
func (st *flushState) candidates(batch []*pending) {
	seen := map[[16]byte]struct{}{}
	for r, p := range batch {
		if !st.live[r] {
			continue
		}
		for i := range p.events {
			e := &p.events[i]
			var key pgtype.UUID
			if e.EventID != "" {
				key = pgtype.UUID{Bytes: EventKey(e.ProxyID, e.EventID), Valid: true}
				if _, dup := seen[key.Bytes]; dup {
					continue
				}
				seen[key.Bytes] = struct{}{}
				st.keys = append(st.keys, key)
			}
			st.ev = append(st.ev, e)
			st.evKey = append(st.evKey, key)
			st.req = append(st.req, int32(r))
		}
	}
	slices.SortFunc(st.keys, func(a, b pgtype.UUID) int { return bytes.Compare(a.Bytes[:], b.Bytes[:]) })
}

// EventKey is the idempotency key of (proxyID, eventID) as the database
// stores it: the first 128 bits of SHA-256(proxyID || 0x00 || eventID), the
// SQL function usage_event_key. Neither id can hold a NUL, so distinct
// pairs hash distinct inputs; two of 10^11 remembered keys collide with
// probability about 1.5 * 10^-17 (n^2 / 2^129), and a collision would only
// make an event look like a retry.
func EventKey(proxyID, eventID string) [16]byte {
	h := sha256.New()
	h.Write([]byte(proxyID))
	h.Write([]byte{0})
	h.Write([]byte(eventID))
	var sum [sha256.Size]byte
	var k [16]byte
	copy(k[:], h.Sum(sum[:0]))
	return k
}

// ConnectionEvents are the starts and ends among a flush's events, as
// LogConnections' parallel arrays.
type ConnectionEvents struct {
	ProxyIDs, ConnectionIDs []string
	Times                   []time.Time
	IsStarts                []bool
	Owners                  []string
}

// ConnectionEventsOf lists the starts and ends among events, each with its
// proxy's owner.
func ConnectionEventsOf(events []*ingest.Event, owner func(proxyID string) string) ConnectionEvents {
	var ce ConnectionEvents
	for _, e := range events {
		if e.IsConnectionEvent() {
			ce.ProxyIDs = append(ce.ProxyIDs, e.ProxyID)
			ce.ConnectionIDs = append(ce.ConnectionIDs, e.ConnectionID)
			ce.Times = append(ce.Times, e.Time)
			ce.IsStarts = append(ce.IsStarts, e.Type == ingest.ConnectionStart)
			ce.Owners = append(ce.Owners, owner(e.ProxyID))
		}
	}
	return ce
}

// Args are LogConnections' arguments.
func (ce ConnectionEvents) Args() []any {
	return []any{ce.ProxyIDs, ce.ConnectionIDs, ce.Times, ce.IsStarts, ce.Owners}
}

// unavailable reports whether err means the database cannot be reached,
// as opposed to a problem with the data.
func unavailable(err error) bool { return database.IsUnavailable(err) }

func retryable(err error) bool { return database.IsRetryable(err) }

// clientError turns a flush failure into what the caller reports.
func clientError(err error) error {
	if unavailable(err) {
		return apperr.Errorf(apperr.Unavailable, "database unavailable, retry later")
	}
	return err
}
