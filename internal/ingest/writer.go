package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/apperr"
	"proxyusage/internal/database"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	// PoolConfig is copied for the writer's own connections, which carry a
	// staging table each.
	PoolConfig *pgxpool.Config
	Metrics    *telemetry.Metrics
	Logger     *slog.Logger

	Writers        int           // concurrent flushing connections (default 2)
	QueueSize      int           // requests waiting before load is shed (default 4096)
	MaxFlushEvents int           // events per transaction (default 50,000)
	FlushTimeout   time.Duration // per transaction (default 10s)
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
// flushing loops each take everything waiting, write it in one transaction
// (COPY into a staging table, then one statement that deduplicates, stores
// and logs invalidations), and acknowledge every request after the commit.
type Writer struct {
	cfg   WriterConfig
	pool  *pgxpool.Pool
	log   *slog.Logger
	queue chan *pending

	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

type pending struct {
	events []Event
	done   chan outcome // buffered: the writer never blocks on a gone caller
}

type outcome struct {
	accepted int
	err      error
}

// NewWriter validates cfg and opens the writer's connection pool.
func NewWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Writers = cmp.Or(cfg.Writers, 2)
	cfg.QueueSize = cmp.Or(cfg.QueueSize, 4096)
	cfg.MaxFlushEvents = cmp.Or(cfg.MaxFlushEvents, 50_000)
	cfg.FlushTimeout = cmp.Or(cfg.FlushTimeout, 10*time.Second)

	pc := cfg.PoolConfig.Copy()
	pc.MaxConns = int32(cfg.Writers)
	pc.MinConns = 0
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, createStaging)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("ingest: writer pool: %w", err)
	}
	return &Writer{
		cfg:   cfg,
		pool:  pool,
		log:   cfg.Logger.With(slog.String("component", "ingest.writer")),
		queue: make(chan *pending, cfg.QueueSize),
	}, nil
}

// Pool is the writer's own connection pool (for metrics).
func (w *Writer) Pool() *pgxpool.Pool { return w.pool }

// Start launches the flushing loops. They run until Stop.
func (w *Writer) Start() {
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
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	w.wg.Wait()
	w.pool.Close()
}

// Write stores events durably and returns how many were new (the rest were
// duplicates). It returns only after the commit, or with an error when the
// queue is full or the database cannot be reached. An error does not
// guarantee the events were not stored: clients retry with eventIds.
func (w *Writer) Write(ctx context.Context, events []Event) (accepted int, err error) {
	p := &pending{events: events, done: make(chan outcome, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return 0, apperr.Errorf(apperr.Unavailable, "service is shutting down")
	}
	select {
	case w.queue <- p:
		w.cfg.Metrics.IngestQueueDepth.Set(float64(len(w.queue)))
		w.mu.RUnlock()
	default:
		w.mu.RUnlock()
		w.cfg.Metrics.IngestShed.Inc()
		return 0, apperr.Errorf(apperr.Unavailable, "ingest queue is full, retry later")
	}
	select {
	case o := <-p.done:
		return o.accepted, o.err
	case <-ctx.Done():
		return 0, apperr.Errorf(apperr.Unavailable, "event not confirmed in time, retry with the same eventId")
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
		w.flushAll(batch)
	}
}

// flushAll writes batch in one transaction. If that fails for a reason
// other than the database being unreachable, each request is retried on
// its own so one bad request cannot fail its neighbours.
func (w *Writer) flushAll(batch []*pending) {
	counts, err := w.flush(batch)
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
		p.done <- outcome{accepted: counts[i]}
	}
}

// flush runs one transaction, retrying once on deadlock or serialization
// failure, and returns the number of newly stored events per request.
func (w *Writer) flush(batch []*pending) ([]int, error) {
	var counts []int
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		counts, err = w.flushOnce(batch)
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
	return counts, err
}

func (w *Writer) flushOnce(batch []*pending) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.FlushTimeout)
	defer cancel()
	start := time.Now()

	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit

	src := &stagingSource{batch: batch, req: 0, idx: -1}
	copied, err := tx.CopyFrom(ctx, pgx.Identifier{"ingest_staging"}, stagingColumns, src)
	if err != nil {
		return nil, fmt.Errorf("copy to staging: %w", err)
	}
	rows, err := tx.Query(ctx, flushStatement)
	if err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	counts := make([]int, len(batch))
	var req, n int
	_, err = pgx.ForEachRow(rows, []any{&req, &n}, func() error {
		counts[req] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	w.cfg.Metrics.IngestFlushTime.Observe(time.Since(start).Seconds())
	w.cfg.Metrics.IngestFlushEvents.Observe(float64(copied))
	return counts, nil
}

const createStaging = `
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
  seq int NOT NULL, req int NOT NULL, time timestamptz NOT NULL, proxy_id text NOT NULL,
  event_type text NOT NULL, event_id text, connection_id text,
  bytes_sent bigint NOT NULL, bytes_received bigint NOT NULL,
  duration_us bigint, latency_us bigint, latency_bucket smallint, error_message text, ip_address inet
) ON COMMIT DELETE ROWS`

var stagingColumns = []string{"seq", "req", "time", "proxy_id", "event_type", "event_id",
	"connection_id", "bytes_sent", "bytes_received", "duration_us", "latency_us", "latency_bucket", "error_message", "ip_address"}

// flushStatement stores the staged events once each. The first occurrence
// (lowest seq) of an eventId wins, within the flush and against earlier
// flushes; concurrent flushes inserting the same key serialise on the
// primary key, so exactly one stores it. It returns newly stored counts per
// request.
const flushStatement = `
WITH fresh_keys AS (
  INSERT INTO usage_event_keys (proxy_id, event_id, received_at)
  SELECT DISTINCT ON (proxy_id, event_id) proxy_id, event_id, now()
    FROM ingest_staging WHERE event_id IS NOT NULL
   ORDER BY proxy_id, event_id, seq
  ON CONFLICT DO NOTHING
  RETURNING proxy_id, event_id
), chosen AS (
  SELECT s.* FROM ingest_staging s WHERE s.event_id IS NULL
  UNION ALL
  (SELECT DISTINCT ON (s.proxy_id, s.event_id) s.*
     FROM ingest_staging s JOIN fresh_keys k ON k.proxy_id = s.proxy_id AND k.event_id = s.event_id
    ORDER BY s.proxy_id, s.event_id, s.seq)
), stored AS (
  INSERT INTO usage_events (time, proxy_id, event_type, event_id, connection_id, bytes_sent, bytes_received,
                            duration_us, latency_us, latency_bucket, error_message, ip_address, received_at)
  SELECT time, proxy_id, event_type, event_id, connection_id, bytes_sent, bytes_received,
         duration_us, latency_us, latency_bucket, error_message, ip_address, now()
    FROM chosen
), logged AS (
  INSERT INTO usage_invalidations (proxy_id, day)
  SELECT DISTINCT proxy_id, (time AT TIME ZONE 'UTC')::date FROM chosen
), logged_connections AS (
  INSERT INTO usage_connection_invalidations (proxy_id, connection_id)
  SELECT DISTINCT proxy_id, connection_id FROM chosen
   WHERE event_type IN ('connection_start', 'connection_end')
)
SELECT req, count(*)::int FROM chosen GROUP BY req`

// stagingSource streams a batch's events into COPY without building rows.
type stagingSource struct {
	batch []*pending
	req   int
	idx   int
	seq   int32
	row   [14]any
}

func (s *stagingSource) Next() bool {
	for s.req < len(s.batch) {
		s.idx++
		if s.idx < len(s.batch[s.req].events) {
			return true
		}
		s.req++
		s.idx = -1
	}
	return false
}

func (s *stagingSource) Values() ([]any, error) {
	e := &s.batch[s.req].events[s.idx]
	s.seq++
	r := &s.row
	r[0], r[1], r[2], r[3], r[4] = s.seq, int32(s.req), e.Time, e.ProxyID, e.Type
	r[5], r[6] = nullText(e.EventID), nullText(e.ConnectionID)
	r[7], r[8] = e.BytesSent, e.BytesReceived
	r[9], r[10] = nullInt(e.DurationUS, e.HasDuration), nullInt(e.LatencyUS, e.HasLatency)
	r[11] = nil
	if e.HasLatency {
		r[11] = rollup.LatencyBucket(e.LatencyUS)
	}
	r[12] = nullText(e.ErrorMessage)
	r[13] = nil
	if e.IP.IsValid() {
		r[13] = e.IP
	}
	return r[:], nil
}

func (s *stagingSource) Err() error { return nil }

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(v int64, ok bool) any {
	if !ok {
		return nil
	}
	return v
}

// unavailable reports whether err means the database cannot be reached,
// as opposed to a problem with the data.
func unavailable(err error) bool { return database.IsUnavailable(err) }

func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// clientError turns a flush failure into what the caller reports.
func clientError(err error) error {
	if unavailable(err) {
		return apperr.Errorf(apperr.Unavailable, "database unavailable, retry later")
	}
	return err
}
