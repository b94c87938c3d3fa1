// Package app wires the service together: database, migrations, domain
// services, background workers and the HTTP server. cmd/proxyusage parses
// flags and calls it; end-to-end tests run the very same wiring.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/alert"
	"proxyusage/internal/auth"
	"proxyusage/internal/billing"
	"proxyusage/internal/config"
	"proxyusage/internal/database"
	"proxyusage/internal/fairshare"
	httpx "proxyusage/internal/http"
	"proxyusage/internal/ingest"
	"proxyusage/internal/ingest/store"
	"proxyusage/internal/ingest/wire"
	"proxyusage/internal/limit"
	"proxyusage/internal/proxy"
	"proxyusage/internal/rollup"
	"proxyusage/internal/telemetry"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
)

// Main is the running service.
type Main struct {
	Config config.Config
	Logger *slog.Logger
	// Manual names the background services Run builds but leaves to its
	// caller to drive. A service leaves it empty: everything runs.
	Manual Manual
	// ReadWithoutFence sends reads to the standby without waiting for
	// it to replay the request's fence. Tests only (apptest.NoReadFence):
	// it shows the fence is what keeps reads after a write exact.
	ReadWithoutFence bool

	Pool     *pgxpool.Pool
	ReadPool *pgxpool.Pool     // the standbys of READ_DATABASE_URL, nil without
	Standby  *database.Standby // routes reads to ReadPool, nil without
	Metrics  *telemetry.Metrics
	Writer   *store.Writer
	Rollup   *rollup.Worker
	Pruner   *store.KeyPruner
	Alerts   *alert.Evaluator
	Webhooks *alert.Deliverer
	Server   *httpx.Server
	Detected database.Backend
	// HeavyReads admits usage and billing reads heavier than
	// HEAVY_READ_THRESHOLD, fairly between callers.
	HeavyReads *fairshare.Gate
}

// Manual names background services that Run builds but does not start.
// End-to-end tests set it (through apptest's options) to decide when
// rollups or alerts happen, or to keep a replica from delivering.
type Manual struct {
	Rollup         bool // the caller runs Rollup.RunOnce
	AlertEvaluator bool // the caller runs Alerts.RunOnce
	AlertDelivery  bool // this replica delivers no webhooks
}

// Migrate applies the migrations to the configured database.
func (m *Main) Migrate(ctx context.Context) error {
	backend, err := database.Migrate(ctx, m.Config.DatabaseURL, m.Config.Backend, m.Logger)
	if err != nil {
		return err
	}
	m.Detected = backend
	return nil
}

// Run starts the service: migrations, services, workers and HTTP server.
// It returns once the server is listening.
func (m *Main) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err := m.Config.Validate(); err != nil {
		return err
	}
	m.raiseOpenFileLimit()
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit: the collector works harder as the process nears
		// it, instead of letting garbage grow to the size of the live heap
		// (GOGC) on top of what thousands of connections hold.
		debug.SetMemoryLimit(DefaultMemoryLimit)
	}
	if err := m.Migrate(ctx); err != nil {
		return err
	}
	m.Logger.Info("storage backend detected", slog.String("backend", string(m.Detected)))

	m.Pool, err = database.Connect(ctx, m.Config.DatabaseURL, int32(cmp.Or(m.Config.DatabasePoolSize, config.DefaultDatabasePoolSize)))
	if err != nil {
		return err
	}
	m.Metrics = telemetry.New()
	verifier, err := auth.NewVerifier(context.WithoutCancel(ctx), auth.Config{
		Secret: []byte(m.Config.JWTSecret), JWKSURL: m.Config.JWTJWKSURL,
		Issuer: m.Config.JWTIssuer, Audience: m.Config.JWTAudience, Logger: m.Logger,
	})
	if err != nil {
		return err
	}
	proxies := proxy.NewStore(m.Pool)
	m.Writer, err = store.NewWriter(ctx, store.WriterConfig{
		PoolConfig: m.Pool.Config(), Metrics: m.Metrics, Logger: m.Logger,
		Writers:   int(m.Config.IngestWriters),
		RollupLag: m.rollupLag(),
		LagBound:  m.Config.IngestMaxRollupLag,
	})
	if err != nil {
		return err
	}
	m.Writer.Start(context.WithoutCancel(ctx))
	pools := map[string]*pgxpool.Pool{"main": m.Pool, "ingest": m.Writer.Pool()}
	if m.Config.ReadDatabaseURL != "" {
		if err := m.openStandby(ctx); err != nil {
			return err
		}
		pools["standby"] = m.ReadPool
	}
	if err := m.Metrics.Registry.Register(telemetry.NewPoolCollector(pools)); err != nil {
		return err
	}
	decoder, err := wire.NewDecoder(ingest.Window{Late: m.Config.LateDataWindow, Future: m.Config.MaxFutureSkew})
	if err != nil {
		return err
	}
	ingestSvc, err := ingest.NewRecorder(ingest.Config{
		Decoder: decoder, Proxies: proxies, Writer: m.Writer, Metrics: m.Metrics,
	})
	if err != nil {
		return err
	}
	users := user.NewStore(m.Pool)
	reader, err := rollup.NewReader(ctx, m.Pool, m.Detected, m.Config.MaxConnectionAge)
	if err != nil {
		return err
	}
	m.HeavyReads, err = fairshare.New(fairshare.Config{
		Slots: int(m.Config.HeavyReadSlots), Threshold: m.Config.HeavyReadThreshold,
		Metrics: fairshare.Metrics{
			Waiting: m.Metrics.HeavyReadsWaiting, Running: m.Metrics.HeavyReadsRunning,
			Admitted: m.Metrics.HeavyReadsAdmitted, GaveUp: m.Metrics.HeavyReadsGaveUp,
		},
	})
	if err != nil {
		return err
	}
	usageSvc, err := usage.NewStore(usage.Config{Pool: m.Pool, Reader: reader, Proxies: proxies, Users: users, Gate: m.HeavyReads})
	if err != nil {
		return err
	}
	plans := m.Config.Plans
	if plans.Tiers == nil {
		plans = billing.DefaultPlans() // a Config built in code (tests) names none
	}
	billingSvc, err := billing.NewStore(billing.Config{Pool: m.Pool, Plans: plans, Reader: reader, Proxies: proxies, Users: users, Gate: m.HeavyReads})
	if err != nil {
		return err
	}
	m.Rollup, err = rollup.NewWorker(rollup.WorkerConfig{
		Pool: m.Pool, Backend: m.Detected, Metrics: m.Metrics, Logger: m.Logger,
		MaxConnectionAge: m.Config.MaxConnectionAge, RawRetention: m.Config.RawRetention,
	})
	if err != nil {
		return err
	}
	if !m.Manual.Rollup {
		m.Rollup.Start(context.WithoutCancel(ctx))
	}
	m.Pruner, err = store.NewKeyPruner(store.KeyPrunerConfig{Pool: m.Pool, Logger: m.Logger, Window: m.Config.DedupWindow, Metrics: m.Metrics})
	if err != nil {
		return err
	}
	m.Pruner.Start(context.WithoutCancel(ctx))
	limits, err := limit.NewStore(limit.Config{Pool: m.Pool, Reader: reader, PlanLimit: plans.Limit})
	if err != nil {
		return err
	}
	guard := alert.Guard{AllowPrivate: m.Config.WebhookAllowPrivate}
	if guard.AllowPrivate {
		m.Logger.Warn("WEBHOOK_ALLOW_PRIVATE is on: webhooks may reach private and loopback addresses (development only)")
	}
	m.Webhooks, err = alert.NewDeliverer(alert.DelivererConfig{
		Pool: m.Pool, Metrics: m.Metrics, Logger: m.Logger, Guard: guard, Workers: int(m.Config.WebhookWorkers),
		AttemptTimeout: m.Config.WebhookTimeout, FirstRetry: m.Config.WebhookFirstRetry,
		MaxBackoff: m.Config.WebhookMaxBackoff, RetryFor: m.Config.WebhookRetryFor,
	})
	if err != nil {
		return err
	}
	if !m.Manual.AlertDelivery {
		m.Webhooks.Start(context.WithoutCancel(ctx))
	}
	m.Alerts, err = alert.NewEvaluator(alert.EvaluatorConfig{
		Pool: m.Pool, Limits: limits, Metrics: m.Metrics, Logger: m.Logger, LimitedTiers: plans.LimitedTiers(),
		Recorded: m.Webhooks.Wake, Interval: m.Config.AlertInterval,
	})
	if err != nil {
		return err
	}
	if !m.Manual.AlertEvaluator {
		m.Alerts.Start(context.WithoutCancel(ctx))
	}
	m.Server, err = httpx.NewServer(httpx.Config{
		Addr: m.Config.HTTPAddr, Verifier: verifier, Users: users, Proxies: proxies,
		Limits: limits, Webhooks: alert.NewWebhooks(m.Pool, guard),
		Ingest: ingestSvc, Usage: usageSvc, Billing: billingSvc, Metrics: m.Metrics, Logger: m.Logger, Ready: m.ready,
		RouteRead:   m.Standby.Route,
		MaxInflight: m.Config.MaxInflight, MaxInflightPerUser: int(m.Config.MaxInflightPerUser),
		MaxInflightPerService: int(m.Config.MaxInflightPerService), MaxConns: int(m.Config.MaxConns),
		BodyTimeout: m.Config.BodyTimeout, ReadTimeout: m.Config.ReadTimeout, IdleTimeout: m.Config.IdleTimeout,
	})
	if err != nil {
		return err
	}
	if err := m.Server.Open(); err != nil {
		return err
	}
	m.Logger.Info("listening", slog.String("url", m.Server.URL()))
	return nil
}

// rollupLag is what the ingest writer's backpressure reads: the rollups'
// lag as the database says, on every replica, leader or not. A test that
// runs the rollups itself (Manual.Rollup) makes the lag, so ingest does
// not give way to it.
func (m *Main) rollupLag() func(context.Context) (time.Duration, error) {
	if m.Manual.Rollup {
		return nil
	}
	return func(ctx context.Context) (time.Duration, error) {
		lag, _, err := rollup.Backlog(ctx, m.Pool)
		return lag, err
	}
}

// openStandby connects to the standbys of READ_DATABASE_URL, a pool as
// large as the primary's (DATABASE_POOL_SIZE). Only read
// requests use them (httpx.Config.RouteRead); writes, the rollup worker
// and the alert evaluator stay on the primary. The pool connects lazily:
// a standby down at start is a fallback to the primary, not a failure.
func (m *Main) openStandby(ctx context.Context) error {
	var err error
	if m.ReadPool, err = database.Connect(ctx, m.Config.ReadDatabaseURL, int32(cmp.Or(m.Config.DatabasePoolSize, config.DefaultDatabasePoolSize))); err != nil {
		return fmt.Errorf("READ_DATABASE_URL: %w", err)
	}
	m.Standby, err = database.NewStandby(database.StandbyConfig{
		Primary: m.Pool, Standby: m.ReadPool, FenceTimeout: m.Config.ReadFenceTimeout, SkipFence: m.ReadWithoutFence,
		Metrics: database.StandbyMetrics{Served: m.Metrics.ReadsServed, FenceWait: m.Metrics.ReadFenceWait, Fallbacks: m.Metrics.ReadFallbacks},
	})
	if err != nil {
		return err
	}
	m.Logger.Info("reads go to standbys", slog.Duration("fenceTimeout", m.Config.ReadFenceTimeout))
	return nil
}

// raiseOpenFileLimit lifts the soft open-file limit to the hard one (the
// Go runtime does this too; here it is explicit and checked) and warns
// when MAX_CONNS client connections plus the database pools may not fit.
func (m *Main) raiseOpenFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		m.Logger.Warn("cannot read the open-file limit", slog.Any("error", err))
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			m.Logger.Warn("cannot raise the open-file limit", slog.Any("error", err))
			_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	}
	conns := uint64(cmp.Or(m.Config.MaxConns, httpx.DefaultMaxConns))
	if need := conns + openFileMargin; lim.Cur < need {
		m.Logger.Warn("the open-file limit is below MAX_CONNS plus the database connections; raise it (ulimit -n) or lower MAX_CONNS",
			slog.Uint64("limit", lim.Cur), slog.Uint64("need", need))
	}
}

// DefaultMemoryLimit is the Go runtime's soft memory limit unless
// GOMEMLIMIT says otherwise.
const DefaultMemoryLimit = 100 << 20

// openFileMargin is the files the service needs besides client
// connections: both database pools, the listener, logs, /proc reads.
const openFileMargin = 128

func (m *Main) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.Pool.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	pending, err := database.Pending(ctx, m.Pool)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if pending {
		return errors.New("migrations pending")
	}
	return nil
}

// Close drains and stops everything Run started, in reverse order: the
// HTTP server stops accepting and finishes in-flight requests, the writer
// flushes what is queued, then the database goes.
func (m *Main) Close() error {
	var errs []error
	if m.Server != nil {
		errs = append(errs, m.Server.Close())
	}
	if m.Writer != nil {
		m.Writer.Stop()
	}
	if m.Rollup != nil {
		m.Rollup.Stop()
	}
	if m.Pruner != nil {
		m.Pruner.Stop()
	}
	if m.Alerts != nil {
		m.Alerts.Stop()
	}
	if m.Webhooks != nil {
		m.Webhooks.Stop()
	}
	if m.ReadPool != nil {
		m.ReadPool.Close()
	}
	if m.Pool != nil {
		m.Pool.Close()
	}
	return errors.Join(errs...)
}
