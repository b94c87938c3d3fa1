package rollup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/telemetry"
)

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	Pool             *pgxpool.Pool
	Backend          database.Backend
	Metrics          *telemetry.Metrics
	Logger           *slog.Logger
	MaxConnectionAge time.Duration
	RawRetention     time.Duration // TimescaleDB retention policy; 0 leaves it

	Interval time.Duration // between runs when idle (default 1s)
	// BatchSize bounds a run: it stops reading a log once the rows read
	// name this many distinct proxy-days (or connections). The background
	// loop doubles it, up to MaxBatchSize, while runs keep finding more:
	// a run's fixed costs (a round trip per statement, recomputing a
	// touched day's peak) then serve more entries, and a backlog shrinks
	// instead of growing.
	BatchSize int // default 5000
	// MaxBatchSize defaults to 2 × BatchSize: under live ingest larger
	// runs hold their transaction (and the reads' pending work) longer;
	// the default is what the loop effectively used until 2026-12 (a bug
	// reset the batch before doubling it), and what BENCHMARKS.md measured.
	MaxBatchSize int
	RunTimeout   time.Duration // per run (default 60s)
}

func (c *WorkerConfig) validate() error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, errors.New("rollup: Pool is required"))
	}
	if c.Backend != database.Postgres && c.Backend != database.TimescaleDB {
		errs = append(errs, fmt.Errorf("rollup: unknown backend %q", c.Backend))
	}
	if c.Metrics == nil {
		errs = append(errs, errors.New("rollup: Metrics is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("rollup: Logger is required"))
	}
	if c.MaxConnectionAge <= 0 {
		errs = append(errs, errors.New("rollup: MaxConnectionAge must be positive"))
	}
	return errors.Join(errs...)
}

// Worker consumes the rollup logs: it folds the deltas ingest logged into
// the daily rollups (sums add, maxima and first/last combine, histograms
// merge), re-pairs touched connections, recomputes the peaks of the days
// their old or new intervals cover, and deletes the consumed entries: each
// log in its own transactions, by its own loop. Its work is proportional to what was logged, never
// to the size of the days it touches; it does not pause for ingest.
type Worker struct {
	cfg  WorkerConfig
	log  *slog.Logger
	stop context.CancelFunc
	done chan struct{}

	foldMu    sync.Mutex // one fold run at a time in this process
	pairMu    sync.Mutex // one pairing run at a time in this process
	leader    database.Leader
	leading   atomic.Bool // the fold loop holds leader; the pairing loop follows it
	retention sync.Once

	lastFold, lastPair atomic.Int64 // unix nanoseconds of each log's last successful run
}

// NewWorker validates cfg.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Interval = cmp.Or(cfg.Interval, time.Second)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 5000)
	cfg.MaxBatchSize = max(cmp.Or(cfg.MaxBatchSize, 2*cfg.BatchSize), cfg.BatchSize)
	cfg.RunTimeout = cmp.Or(cfg.RunTimeout, 60*time.Second)
	w := &Worker{cfg: cfg, log: cfg.Logger.With(slog.String("component", "rollup.worker"))}
	w.leader = database.Leader{Pool: cfg.Pool, Key: database.LockRollupLeader, OnChange: func(held bool) {
		if !held {
			cfg.Metrics.RollupLeader.Set(0)
			return
		}
		cfg.Metrics.RollupLeader.Set(1)
		w.log.Info("rollup leadership acquired")
	}}
	return w, nil
}

// Start runs the worker's two loops in the background until Stop: one
// folds deltas, one re-pairs connections and keeps peaks. They run
// independently, so sums stay fresh while a large re-pairing runs.
func (w *Worker) Start(ctx context.Context) {
	ctx, w.stop = context.WithCancel(ctx)
	w.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.loop(ctx, true, w.fold) })
	wg.Go(func() { w.loop(ctx, false, w.pair) })
	go func() {
		wg.Wait()
		close(w.done)
	}()
}

// Stop ends the loops, waits for runs in progress and releases leadership.
func (w *Worker) Stop() {
	if w.stop == nil {
		return
	}
	w.stop()
	<-w.done
	w.leading.Store(false)
	w.leader.Release()
}

// loop runs run while this replica leads: the loop that leads takes and
// checks leadership (the Leader is not safe for concurrent use), the
// other follows it.
func (w *Worker) loop(ctx context.Context, leads bool, run func(context.Context, int) (RunStats, error)) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	batch := w.cfg.BatchSize
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next := w.cfg.Interval
		if leads {
			w.leading.Store(w.leader.Acquire(ctx))
		}
		if w.leading.Load() {
			if leads && w.cfg.RawRetention > 0 && w.cfg.Backend == database.TimescaleDB {
				w.applyRetention(ctx)
			}
			stats, err := run(ctx, batch)
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				w.log.Error("rollup run failed", slog.Any("error", err))
				batch = w.cfg.BatchSize
			case stats.Full:
				next = 0 // more waiting: go again at once, with a larger batch
				batch = min(2*batch, w.cfg.MaxBatchSize)
			default:
				batch = w.cfg.BatchSize
			}
		}
		timer.Reset(next)
	}
}

// applyRetention sets the raw-event retention policy to RAW_RETENTION,
// once per process.
func (w *Worker) applyRetention(ctx context.Context) {
	w.retention.Do(func() {
		err := pgx.BeginFunc(ctx, w.cfg.Pool, func(tx pgx.Tx) error {
			retention := intervalText(w.cfg.RawRetention)
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{`SELECT remove_retention_policy('usage_events', if_exists => true)`, nil},
				{`SELECT add_retention_policy('usage_events', $1::interval)`, []any{retention}},
			} {
				if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			w.log.Warn("could not apply retention policy", slog.Any("error", err))
		}
	})
}

// intervalText writes d as a PostgreSQL interval, in whole days when it
// is (so policies read "400 days", not "9600:00:00").
func intervalText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return fmt.Sprintf("%d microseconds", d.Microseconds())
}

// RunStats says what one run did (tests assert on it).
type RunStats struct {
	Days        []DayKey  // proxy-days whose deltas were folded
	PeakDays    []DayKey  // proxy-days whose peaks were recomputed (from their slots)
	Connections []ConnKey // connections re-paired
	Full        bool      // a log held a full batch: more may wait
}

// RunOnce folds delta log rows naming up to BatchSize distinct
// proxy-days, then re-pairs up to as many distinct connections. It does
// not need leadership: runs on several replicas at once consume each log
// row once (see errConsumed).
func (w *Worker) RunOnce(ctx context.Context) (RunStats, error) {
	folded, err := w.fold(ctx, w.cfg.BatchSize)
	if err != nil {
		return folded, err
	}
	paired, err := w.pair(ctx, w.cfg.BatchSize)
	paired.Days, paired.Full = folded.Days, folded.Full || paired.Full
	return paired, err
}

// fold folds delta rows naming up to batch proxy-days into the rollups.
func (w *Worker) fold(ctx context.Context, batch int) (stats RunStats, err error) {
	w.foldMu.Lock()
	defer w.foldMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RunTimeout)
	defer cancel()
	defer w.finish(ctx, &w.lastFold, &stats, &err)
	ids, days, full, err := w.readDeltaLog(ctx, batch)
	if err != nil || len(ids) == 0 {
		return RunStats{Full: full}, err
	}
	err = pgx.BeginTxFunc(ctx, w.cfg.Pool, readCommitted, func(tx pgx.Tx) error {
		if err := claimLogRows(ctx, tx, database.LockRollupFold, "usage_rollup_deltas", ids); err != nil {
			return err
		}
		return foldDeltas(ctx, tx, ids)
	})
	if errors.Is(err, errConsumed) {
		return RunStats{Full: true}, nil // another run was first: read the log again
	}
	if err != nil {
		return RunStats{}, fmt.Errorf("rollup: fold: %w", err)
	}
	return RunStats{Days: days, Full: full}, nil
}

// pair re-pairs up to batch connections named by the connection log,
// replaces their stored intervals and updates the peaks their old and new
// intervals cover.
func (w *Worker) pair(ctx context.Context, batch int) (stats RunStats, err error) {
	w.pairMu.Lock()
	defer w.pairMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RunTimeout)
	defer cancel()
	defer w.finish(ctx, &w.lastPair, &stats, &err)
	ids, events, full, err := w.readConnLog(ctx, batch)
	if err != nil || len(ids) == 0 {
		return RunStats{Full: full}, err
	}
	keys := sortedConnKeys(events)
	var peakDays []DayKey
	err = pgx.BeginTxFunc(ctx, w.cfg.Pool, readCommitted, func(tx pgx.Tx) error {
		if err := claimLogRows(ctx, tx, database.LockRollupPair, "usage_connection_invalidations", ids); err != nil {
			return err
		}
		old, fresh, err := w.repair(ctx, tx, keys, events)
		if err != nil {
			return err
		}
		if peakDays, err = updatePeaks(ctx, tx, old, fresh); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM usage_connection_invalidations WHERE id = ANY($1)`, ids)
		return err
	})
	if errors.Is(err, errConsumed) {
		return RunStats{Full: true}, nil
	}
	if err != nil {
		return RunStats{}, fmt.Errorf("rollup: pair: %w", err)
	}
	return RunStats{PeakDays: peakDays, Connections: keys, Full: full}, nil
}

// finish records a run's outcome and the lag after it. The last-success
// gauge is the older of the two logs' last successful runs, so that one
// loop failing while the other succeeds still reads as stalled.
func (w *Worker) finish(ctx context.Context, last *atomic.Int64, stats *RunStats, err *error) {
	result := "ok"
	if *err != nil {
		result = "error"
	} else {
		last.Store(time.Now().UnixNano())
		if f, p := w.lastFold.Load(), w.lastPair.Load(); f > 0 && p > 0 {
			w.cfg.Metrics.RollupLastSuccess.Set(float64(min(f, p)) / 1e9)
		}
		w.cfg.Metrics.RollupDays.Add(float64(len(stats.Days)))
	}
	w.cfg.Metrics.RollupRuns.WithLabelValues(result).Inc()
	w.observeLag(ctx)
}

// readCommitted is a run's isolation, whatever the server's default:
// claimLogRows' check must see the commit of the run it waited for.
var readCommitted = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}

// errConsumed says that log rows a run read were consumed by another run
// before this one took the log's lock.
//
// Folding and the slot counts are additive, so two runs consuming the
// same log row would count it twice. A run's transaction therefore takes
// the log's transaction-level lock (database.LockRollupFold or
// LockRollupPair) and re-checks its rows; the second run waits, finds
// them gone and consumes nothing. This keeps RunOnce safe on any replica,
// leader or not, and a loop that lost leadership mid-run (its session
// died, another replica took over) safe. Two locks: the logs are
// independent (sums and histograms from deltas, intervals and peaks from
// connections), and folding must not wait for a slow re-pairing.
var errConsumed = errors.New("rollup: log rows consumed by another run")

// claimLogRows takes the log's lock for tx and checks that every row ids
// of table the run read is still there. The log was read before the
// lock, so a run that committed in between may have consumed them; under
// READ COMMITTED the check sees its commit.
func claimLogRows(ctx context.Context, tx pgx.Tx, lock int64, table string, ids []int64) error {
	// Two statements: one statement's snapshot is taken before it waits
	// for the lock, and would not see the commit it waited for.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lock); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE id = ANY($1)`, ids).Scan(&n); err != nil {
		return err
	}
	if n != len(ids) {
		return errConsumed
	}
	return nil
}

// readDeltaLog reads the oldest rows of the delta log until they name
// batch distinct proxy-days (at least one row), and returns those.
func (w *Worker) readDeltaLog(ctx context.Context, batch int) ([]int64, []DayKey, bool, error) {
	set := map[DayKey]bool{}
	var proxies []string
	var days []time.Time
	ids, full, err := w.readLog(ctx, batch, `SELECT id, proxy_ids, days FROM usage_rollup_deltas WHERE id > $2 ORDER BY id LIMIT $1`,
		[]any{&proxies, &days}, func() (int, error) {
			if len(proxies) != len(days) {
				return 0, errors.New("malformed rollup delta row")
			}
			for i, p := range proxies {
				set[DayKey{ProxyID: p, Day: days[i].UTC()}] = true
			}
			return len(set), nil
		})
	if err != nil {
		return nil, nil, false, fmt.Errorf("rollup: read deltas: %w", err)
	}
	return ids, sortedDays(set), full, nil
}

// readConnLog is readDeltaLog for the connection log: the events of up to
// batch connections, by connection.
func (w *Worker) readConnLog(ctx context.Context, batch int) ([]int64, map[ConnKey][]ConnEvent, bool, error) {
	events := map[ConnKey][]ConnEvent{}
	var proxies, conns []string
	var times []time.Time
	var starts []bool
	ids, full, err := w.readLog(ctx, batch, `SELECT id, proxy_ids, connection_ids, times, is_starts FROM usage_connection_invalidations WHERE id > $2 ORDER BY id LIMIT $1`,
		[]any{&proxies, &conns, &times, &starts}, func() (int, error) {
			if len(proxies) != len(conns) || len(times) != len(conns) || len(starts) != len(conns) {
				return 0, errors.New("malformed connection log row")
			}
			for i, p := range proxies {
				k := ConnKey{ProxyID: p, ConnectionID: conns[i]}
				events[k] = append(events[k], ConnEvent{Time: times[i], Start: starts[i]})
			}
			return len(events), nil
		})
	if err != nil {
		return nil, nil, false, fmt.Errorf("rollup: read connection log: %w", err)
	}
	return ids, events, full, nil
}

func sortedConnKeys[V any](m map[ConnKey]V) []ConnKey {
	keys := make([]ConnKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].ProxyID != keys[j].ProxyID {
			return keys[i].ProxyID < keys[j].ProxyID
		}
		return keys[i].ConnectionID < keys[j].ConnectionID
	})
	return keys
}

// readLog scans log rows (id first, then dest) oldest first, calling add
// for each (it returns the distinct keys read so far), until batch keys
// are read. A row holds one flush's entries (hundreds on a busy system,
// one on a quiet one), so rows are fetched in growing pages. full reports
// that more rows may wait.
func (w *Worker) readLog(ctx context.Context, batch int, query string, dest []any, add func() (int, error)) (ids []int64, full bool, err error) {
	var id, after int64
	keys := 0
	for page := 64; keys < batch; page = min(2*page, 4096) {
		rows, err := w.cfg.Pool.Query(ctx, query, page, after)
		if err != nil {
			return nil, false, err
		}
		n := 0
		for keys < batch && rows.Next() {
			if err := rows.Scan(append([]any{&id}, dest...)...); err != nil {
				rows.Close()
				return nil, false, err
			}
			if keys, err = add(); err != nil {
				rows.Close()
				return nil, false, err
			}
			ids, after, n = append(ids, id), id, n+1
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, false, err
		}
		if n < page && keys < batch {
			return ids, false, nil // the log is read to its end
		}
	}
	return ids, true, nil
}

// repair pairs the connections' new events (keys, sorted) with their
// stored intervals and unmatched ends, and replaces those. It returns
// their old and new intervals.
func (w *Worker) repair(ctx context.Context, tx pgx.Tx, keys []ConnKey, events map[ConnKey][]ConnEvent) (old, fresh map[ConnKey][]Interval, err error) {
	if len(keys) == 0 {
		return nil, nil, nil
	}
	all, old, err := storedEvents(ctx, tx, keys)
	if err != nil {
		return nil, nil, err
	}
	var rows [][]any
	fresh = make(map[ConnKey][]Interval, len(keys))
	for _, k := range keys {
		ivs, unmatched := PairEnds(append(all[k], events[k]...), w.cfg.MaxConnectionAge)
		fresh[k] = ivs
		for _, iv := range ivs {
			rows = append(rows, []any{k.ProxyID, k.ConnectionID, iv.Start, iv.End, iv.Paired})
		}
		for _, end := range unmatched {
			rows = append(rows, []any{k.ProxyID, k.ConnectionID, nil, end, false})
		}
	}
	proxies, ids := splitConnKeys(keys)
	if _, err := tx.Exec(ctx, `
		DELETE FROM usage_connections c USING unnest($1::text[], $2::text[]) AS k(proxy_id, connection_id)
		 WHERE c.proxy_id = k.proxy_id AND c.connection_id = k.connection_id`, proxies, ids); err != nil {
		return nil, nil, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"usage_connections"},
		[]string{"proxy_id", "connection_id", "start_time", "end_time", "paired"}, pgx.CopyFromRows(rows)); err != nil {
		return nil, nil, err
	}
	return old, fresh, nil
}

func (w *Worker) observeLag(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	lag, pending, err := Backlog(ctx, w.cfg.Pool)
	if err == nil {
		w.cfg.Metrics.RollupLag.Set(lag.Seconds())
		w.cfg.Metrics.RollupPending.Set(float64(pending))
	}
}

// Backlog returns the rollups' lag (the age of the oldest log row not yet
// consumed, 0 when none waits) and the log rows waiting, as any replica
// sees them. Index-only: the oldest row is the lowest id, and ids are
// dense enough (rows are deleted oldest first) that max - min + 1 bounds
// the backlog, in rows, without counting it.
func Backlog(ctx context.Context, pool *pgxpool.Pool) (lag time.Duration, pending int64, err error) {
	var seconds float64
	err = pool.QueryRow(ctx, `
		SELECT coalesce(extract(epoch FROM now() - least(
		         (SELECT logged_at FROM usage_rollup_deltas ORDER BY id LIMIT 1),
		         (SELECT logged_at FROM usage_connection_invalidations ORDER BY id LIMIT 1))), 0)::float8,
		       coalesce((SELECT max(id) - min(id) + 1 FROM usage_rollup_deltas), 0) +
		       coalesce((SELECT max(id) - min(id) + 1 FROM usage_connection_invalidations), 0)`).Scan(&seconds, &pending)
	return time.Duration(max(seconds, 0) * float64(time.Second)), pending, err
}

func sortedDays[V any](set map[DayKey]V) []DayKey {
	out := make([]DayKey, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ProxyID != out[j].ProxyID {
			return out[i].ProxyID < out[j].ProxyID
		}
		return out[i].Day.Before(out[j].Day)
	})
	return out
}
