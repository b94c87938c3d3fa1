package alert

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"proxyusage/internal/database"
	"proxyusage/internal/limit"
	"proxyusage/internal/telemetry"
)

// EvaluatorConfig configures an Evaluator.
type EvaluatorConfig struct {
	Pool    *pgxpool.Pool
	Limits  *limit.Store
	Metrics *telemetry.Metrics
	Logger  *slog.Logger
	// LimitedTiers are the tiers whose plan carries a limit.
	LimitedTiers []string
	// Recorded is called after a run recorded alerts (to wake a deliverer).
	Recorded func()

	Interval   time.Duration // between evaluations (default 10s)
	RunTimeout time.Duration // per evaluation (default 60s)
	Now        func() time.Time
}

// Evaluator records an alert the first time a user's month usage reaches
// each of their thresholds.
type Evaluator struct {
	cfg    EvaluatorConfig
	log    *slog.Logger
	stop   context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	leader database.Leader
}

// NewEvaluator validates cfg and applies defaults.
func NewEvaluator(cfg EvaluatorConfig) (*Evaluator, error) {
	if cfg.Pool == nil || cfg.Limits == nil || cfg.Metrics == nil || cfg.Logger == nil {
		return nil, errors.New("alert: evaluator needs Pool, Limits, Metrics and Logger")
	}
	cfg.Interval = cmp.Or(cfg.Interval, 10*time.Second)
	cfg.RunTimeout = cmp.Or(cfg.RunTimeout, 60*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Recorded == nil {
		cfg.Recorded = func() {}
	}
	e := &Evaluator{cfg: cfg, log: cfg.Logger.With(slog.String("component", "alert.evaluator"))}
	e.leader = database.Leader{Pool: cfg.Pool, Key: database.LockAlertLeader, OnChange: func(held bool) {
		if !held {
			cfg.Metrics.AlertsLeader.Set(0)
			return
		}
		cfg.Metrics.AlertsLeader.Set(1)
		e.log.Info("alert evaluator leadership acquired")
	}}
	return e, nil
}

// Start runs evaluations every Interval while this replica leads.
func (e *Evaluator) Start(ctx context.Context) {
	ctx, e.stop = context.WithCancel(ctx)
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		ticker := time.NewTicker(e.cfg.Interval)
		defer ticker.Stop()
		for {
			if e.leader.Acquire(ctx) {
				if _, err := e.RunOnce(ctx); err != nil && ctx.Err() == nil {
					e.log.Error("alert evaluation failed", slog.Any("error", err))
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
}

// Stop ends the loop, waits for a run in progress and releases leadership.
func (e *Evaluator) Stop() {
	if e.stop == nil {
		return
	}
	e.stop()
	<-e.done
	e.leader.Release()
}

// monthGrace is how long into a month the previous one is still
// evaluated, so a crossing in its last seconds is not missed.
const monthGrace = time.Hour

// RunOnce evaluates every limited user once and returns how many alerts it
// recorded. Safe to run on several replicas at once: the database refuses
// a second alert for the same user, month and threshold.
func (e *Evaluator) RunOnce(ctx context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RunTimeout)
	defer cancel()
	now := e.cfg.Now().UTC()
	months := []time.Time{limit.Month(now)}
	if now.Sub(months[0]) < monthGrace {
		months = append(months, months[0].AddDate(0, -1, 0))
	}
	subjects, err := e.cfg.Limits.Subjects(ctx, e.cfg.LimitedTiers)
	if err != nil {
		return 0, err
	}
	recorded := 0
	for _, month := range months {
		done, err := e.recorded(ctx, month)
		if err != nil {
			return recorded, err
		}
		for _, sub := range subjects {
			l, _ := e.cfg.Limits.Effective(sub)
			if l == nil {
				continue
			}
			var open []int
			for _, p := range l.AlertPercents {
				if !done[threshold{sub.UserID, p}] {
					open = append(open, p)
				}
			}
			if len(open) == 0 {
				continue
			}
			used, err := e.cfg.Limits.Used(ctx, sub, month)
			if err != nil {
				return recorded, err
			}
			var reached []int32
			for _, p := range open {
				if l.Reached(used, p) {
					reached = append(reached, int32(p))
				}
			}
			if len(reached) == 0 {
				continue
			}
			n, err := e.record(ctx, sub.UserID, month, reached, l.MonthlyGB, used)
			if err != nil {
				return recorded, err
			}
			recorded += n
		}
	}
	if recorded > 0 {
		e.cfg.Metrics.AlertsRecorded.Add(float64(recorded))
		e.log.Info("usage alerts recorded", slog.Int("count", recorded))
		e.cfg.Recorded()
	}
	return recorded, nil
}

type threshold struct {
	userID  string
	percent int
}

// recorded returns the thresholds already alerted in month.
func (e *Evaluator) recorded(ctx context.Context, month time.Time) (map[threshold]bool, error) {
	rows, err := e.cfg.Pool.Query(ctx, `SELECT user_id, threshold_percent FROM usage_alerts WHERE month = $1`, month)
	if err != nil {
		return nil, err
	}
	out := map[threshold]bool{}
	var t threshold
	_, err = pgx.ForEachRow(rows, []any{&t.userID, &t.percent}, func() error {
		out[t] = true
		return nil
	})
	return out, err
}

// record inserts the alerts; ones already there (another replica, an
// earlier run) are left alone. Users without a webhook get theirs recorded
// as such, so nothing waits for delivery.
func (e *Evaluator) record(ctx context.Context, userID string, month time.Time, percents []int32, limitGB decimal.Decimal, used *big.Int) (int, error) {
	tag, err := e.cfg.Pool.Exec(ctx, `
		INSERT INTO usage_alerts (user_id, month, threshold_percent, limit_gb, used_bytes, state)
		SELECT $1, $2, p, $4, $5,
		       CASE WHEN EXISTS (SELECT 1 FROM user_webhooks w WHERE w.user_id = $1) THEN 'pending' ELSE 'no_webhook' END
		  FROM unnest($3::integer[]) AS p
		ON CONFLICT (user_id, month, threshold_percent) DO NOTHING`,
		userID, month, percents, limitGB, decimal.NewFromBigInt(used, 0))
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}
