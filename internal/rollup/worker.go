package rollup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/telemetry"
)

// leaderLockKey is the advisory lock that makes exactly one replica run the
// worker loop. Its holder's session ending (crash, network) releases it.
// It is about doing the work once, not about correctness: runLockKey is.
const leaderLockKey int64 = 0x70727573_61676501 // "prusage\x01"

// runLockKey is the transaction-level advisory lock every run's
// transaction takes before it consumes log rows. Folding is additive, so
// two runs folding the same delta row would count it twice; with the lock
// the second run waits, finds its rows gone and consumes nothing. This
// keeps RunOnce safe on any replica, leader or not, and a loop that lost
// leadership mid-run (its session died, another replica took over) safe.
const runLockKey int64 = 0x70727573_61676502 // "prusage\x02"

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
	BatchSize    int           // default 5000
	MaxBatchSize int           // default 20 × BatchSize
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
// their old or new intervals cover, and deletes the consumed entries, all
// in one transaction. Its work is proportional to what was logged, never
// to the size of the days it touches; it does not pause for ingest.
type Worker struct {
	cfg  WorkerConfig
	log  *slog.Logger
	stop context.CancelFunc
	done chan struct{}

	mu        sync.Mutex // one run at a time in this process
	leader    database.Leader
	retention sync.Once
}

// NewWorker validates cfg.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Interval = cmp.Or(cfg.Interval, time.Second)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 5000)
	cfg.MaxBatchSize = max(cmp.Or(cfg.MaxBatchSize, 20*cfg.BatchSize), cfg.BatchSize)
	cfg.RunTimeout = cmp.Or(cfg.RunTimeout, 60*time.Second)
	w := &Worker{cfg: cfg, log: cfg.Logger.With(slog.String("component", "rollup.worker"))}
	w.leader = database.Leader{Pool: cfg.Pool, Key: leaderLockKey, OnChange: func(held bool) {
		if !held {
			cfg.Metrics.RollupLeader.Set(0)
			return
		}
		cfg.Metrics.RollupLeader.Set(1)
		w.log.Info("rollup leadership acquired")
	}}
	return w, nil
}

// Start runs the worker loop in the background until Stop.
func (w *Worker) Start(ctx context.Context) {
	ctx, w.stop = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		w.loop(ctx)
	}()
}

// Stop ends the loop, waits for a run in progress and releases leadership.
func (w *Worker) Stop() {
	if w.stop == nil {
		return
	}
	w.stop()
	<-w.done
	w.leader.Release()
}

func (w *Worker) loop(ctx context.Context) {
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
		if w.leader.Acquire(ctx) {
			if w.cfg.RawRetention > 0 && w.cfg.Backend == database.TimescaleDB {
				w.applyRetention(ctx)
			}
			stats, err := w.run(ctx, batch)
			batch = w.cfg.BatchSize
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				w.log.Error("rollup run failed", slog.Any("error", err))
			case stats.Full:
				next = 0 // more waiting: go again at once, with a larger batch
				batch = min(2*batch, w.cfg.MaxBatchSize)
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
			if _, err := tx.Exec(ctx, `SELECT remove_retention_policy('usage_events', if_exists => true)`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT add_retention_policy('usage_events', $1::interval)`, intervalText(w.cfg.RawRetention))
			return err
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

// RunOnce consumes log rows naming up to BatchSize distinct proxy-days
// and as many distinct connections. It does not need leadership: runs on
// several replicas at once consume each log row once (runLockKey).
func (w *Worker) RunOnce(ctx context.Context) (stats RunStats, err error) {
	return w.run(ctx, w.cfg.BatchSize)
}

func (w *Worker) run(ctx context.Context, batch int) (stats RunStats, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RunTimeout)
	defer cancel()
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
		} else {
			w.cfg.Metrics.RollupLastSuccess.SetToCurrentTime()
			w.cfg.Metrics.RollupDays.Add(float64(len(stats.Days)))
		}
		w.cfg.Metrics.RollupRuns.WithLabelValues(result).Inc()
		w.observeLag(ctx)
	}()

	deltaIDs, days, deltaFull, err := w.readDeltaLog(ctx, batch)
	if err != nil {
		return stats, err
	}
	connIDs, conns, connFull, err := w.readConnLog(ctx, batch)
	if err != nil {
		return stats, err
	}
	stats.Full = deltaFull || connFull
	if len(deltaIDs) == 0 && len(connIDs) == 0 {
		return stats, nil
	}
	err = pgx.BeginFunc(ctx, w.cfg.Pool, func(tx pgx.Tx) error {
		if err := claimLogRows(ctx, tx, deltaIDs, connIDs); err != nil {
			return err
		}
		if err := foldDeltas(ctx, tx, deltaIDs); err != nil {
			return err
		}
		old, fresh, err := w.repair(ctx, tx, conns)
		if err != nil {
			return err
		}
		if stats.PeakDays, err = updatePeaks(ctx, tx, old, fresh); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM usage_connection_invalidations WHERE id = ANY($1)`, connIDs)
		return err
	})
	if errors.Is(err, errConsumed) {
		// Another run consumed some of them first: read the logs again.
		return RunStats{Full: true}, nil
	}
	if err != nil {
		return stats, fmt.Errorf("rollup: %w", err)
	}
	stats.Days = days
	stats.Connections = conns
	return stats, nil
}

// errConsumed says that log rows a run read were consumed by another run
// before this one took runLockKey.
var errConsumed = errors.New("rollup: log rows consumed by another run")

// claimLogRows takes runLockKey for tx and checks that every log row the
// run read is still there. The logs were read before the lock, so a run
// that committed in between may have consumed them; under READ COMMITTED
// the checks see its commit.
func claimLogRows(ctx context.Context, tx pgx.Tx, deltaIDs, connIDs []int64) error {
	// Two statements: one statement's snapshot is taken before it waits
	// for the lock, and would not see the commit it waited for.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, runLockKey); err != nil {
		return err
	}
	var deltas, conns int
	err := tx.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM usage_rollup_deltas WHERE id = ANY($1)),
		       (SELECT count(*) FROM usage_connection_invalidations WHERE id = ANY($2))`,
		deltaIDs, connIDs).Scan(&deltas, &conns)
	if err != nil {
		return err
	}
	if deltas != len(deltaIDs) || conns != len(connIDs) {
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

// readConnLog is readDeltaLog for the connection log.
func (w *Worker) readConnLog(ctx context.Context, batch int) ([]int64, []ConnKey, bool, error) {
	set := map[ConnKey]bool{}
	var proxies, conns []string
	ids, full, err := w.readLog(ctx, batch, `SELECT id, proxy_ids, connection_ids FROM usage_connection_invalidations WHERE id > $2 ORDER BY id LIMIT $1`,
		[]any{&proxies, &conns}, func() (int, error) {
			if len(proxies) != len(conns) {
				return 0, errors.New("malformed connection invalidation row")
			}
			for i, p := range proxies {
				set[ConnKey{ProxyID: p, ConnectionID: conns[i]}] = true
			}
			return len(set), nil
		})
	if err != nil {
		return nil, nil, false, fmt.Errorf("rollup: read connection invalidations: %w", err)
	}
	keys := make([]ConnKey, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].ProxyID != keys[j].ProxyID {
			return keys[i].ProxyID < keys[j].ProxyID
		}
		return keys[i].ConnectionID < keys[j].ConnectionID
	})
	return ids, keys, full, nil
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

// repair re-pairs the connections and replaces their stored intervals. It
// returns their old and new intervals.
func (w *Worker) repair(ctx context.Context, tx pgx.Tx, conns []ConnKey) (old, fresh map[ConnKey][]Interval, err error) {
	if len(conns) == 0 {
		return nil, nil, nil
	}
	if old, err = storedIntervals(ctx, tx, conns); err != nil {
		return nil, nil, err
	}
	if fresh, err = freshIntervals(ctx, tx, conns, w.cfg.MaxConnectionAge); err != nil {
		return nil, nil, err
	}
	proxies, ids := splitConnKeys(conns)
	if _, err := tx.Exec(ctx, `
		DELETE FROM usage_connections c USING unnest($1::text[], $2::text[]) AS k(proxy_id, connection_id)
		 WHERE c.proxy_id = k.proxy_id AND c.connection_id = k.connection_id`, proxies, ids); err != nil {
		return nil, nil, err
	}
	var rows [][]any
	for _, k := range conns {
		for _, iv := range fresh[k] {
			rows = append(rows, []any{k.ProxyID, k.ConnectionID, iv.Start, iv.End, iv.Paired})
		}
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
	// Index-only: the oldest row is the lowest id, and ids are dense
	// enough (rows are deleted oldest first) that max - min + 1 bounds the
	// backlog, in rows, without counting it.
	var lag float64
	var pending int64
	err := w.cfg.Pool.QueryRow(ctx, `
		SELECT coalesce(extract(epoch FROM now() - least(
		         (SELECT logged_at FROM usage_rollup_deltas ORDER BY id LIMIT 1),
		         (SELECT logged_at FROM usage_connection_invalidations ORDER BY id LIMIT 1))), 0)::float8,
		       coalesce((SELECT max(id) - min(id) + 1 FROM usage_rollup_deltas), 0) +
		       coalesce((SELECT max(id) - min(id) + 1 FROM usage_connection_invalidations), 0)`).Scan(&lag, &pending)
	if err == nil {
		w.cfg.Metrics.RollupLag.Set(max(lag, 0))
		w.cfg.Metrics.RollupPending.Set(float64(pending))
	}
}

func sortedDays(set map[DayKey]bool) []DayKey {
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
