package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/telemetry"
)

// KeyPruner forgets idempotency keys older than the dedup window, in
// bounded batches. Running it on several replicas at once is harmless.
type KeyPruner struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	metrics  *telemetry.Metrics
	window   time.Duration
	interval time.Duration
	batch    int
	stop     context.CancelFunc
	done     chan struct{}
}

// KeyPrunerConfig configures a KeyPruner.
type KeyPrunerConfig struct {
	Pool     *pgxpool.Pool
	Logger   *slog.Logger
	Window   time.Duration // DEDUP_WINDOW
	Interval time.Duration // default 10 minutes
	Batch    int           // keys per statement, default 10,000
	// Metrics, when set, receives the key index's size and the
	// database's shared_buffers after each run: an index that outgrows
	// the cache makes every claim evict a page (README.md, tuning).
	Metrics *telemetry.Metrics
}

// NewKeyPruner validates cfg.
func NewKeyPruner(cfg KeyPrunerConfig) (*KeyPruner, error) {
	var errs []error
	if cfg.Pool == nil {
		errs = append(errs, errors.New("ingest: pruner Pool is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("ingest: pruner Logger is required"))
	}
	if cfg.Window <= 0 {
		errs = append(errs, errors.New("ingest: dedup window must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &KeyPruner{
		pool: cfg.Pool, log: cfg.Logger.With(slog.String("component", "ingest.pruner")), metrics: cfg.Metrics, window: cfg.Window,
		interval: cmp.Or(cfg.Interval, 10*time.Minute), batch: cmp.Or(cfg.Batch, 10_000),
	}, nil
}

// Start prunes in the background until Stop.
func (p *KeyPruner) Start(ctx context.Context) {
	ctx, p.stop = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.interval)
		defer t.Stop()
		for {
			if _, err := p.RunOnce(ctx); err != nil && !errors.Is(err, context.Canceled) {
				p.log.Warn("pruning idempotency keys failed", slog.Any("error", err))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the background loop.
func (p *KeyPruner) Stop() {
	if p.stop != nil {
		p.stop()
		<-p.done
	}
}

// RunOnce deletes every expired key and returns how many, then reads
// the key index's size for Metrics.
func (p *KeyPruner) RunOnce(ctx context.Context) (int64, error) {
	n, err := p.prune(ctx)
	if err != nil {
		return n, err
	}
	return n, p.observeSize(ctx)
}

// observeSize sets the key index's size and shared_buffers.
func (p *KeyPruner) observeSize(ctx context.Context) error {
	if p.metrics == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var index, buffers int64
	if err := p.pool.QueryRow(ctx, `
		SELECT pg_indexes_size('usage_event_keys'), pg_size_bytes(current_setting('shared_buffers'))`).Scan(&index, &buffers); err != nil {
		return fmt.Errorf("reading the key index's size: %w", err)
	}
	p.metrics.KeyIndexBytes.Set(float64(index))
	p.metrics.SharedBuffers.Set(float64(buffers))
	return nil
}

func (p *KeyPruner) prune(ctx context.Context) (int64, error) {
	var total int64
	for {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		tag, err := p.pool.Exec(ctx, `
			DELETE FROM usage_event_keys WHERE ctid = ANY (ARRAY(
			  SELECT ctid FROM usage_event_keys WHERE received_at < now() - $1::interval LIMIT $2))`, p.window, p.batch)
		cancel()
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(p.batch) {
			return total, nil
		}
	}
}
