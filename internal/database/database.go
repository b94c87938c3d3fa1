// Package database connects to PostgreSQL, detects the storage backend
// (TimescaleDB or plain PostgreSQL), applies the migrations in sql/ and
// manages a local cluster when no DATABASE_URL is given.
package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	schema "proxyusage/sql"
)

// Backend is the storage backend in use.
type Backend string

const (
	TimescaleDB Backend = "timescaledb"
	Postgres    Backend = "postgres"
)

// Connect opens a pool tuned for the service.
func Connect(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.MaxConnIdleTime = time.Minute
	cfg.HealthCheckPeriod = 5 * time.Second
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	cfg.ConnConfig.RuntimeParams["application_name"] = "proxyusage"
	// One backend per statement: a parallel plan's workers are more
	// cores for one request, and the heavy-read gate (internal/fairshare)
	// counts one core a slot. A year-long report over 20,000 proxies ran
	// with workers taking a whole second core (fairness 8b).
	cfg.ConnConfig.RuntimeParams["max_parallel_workers_per_gather"] = "0"
	return pgxpool.NewWithConfig(ctx, cfg)
}

// DetectBackend decides which backend a database should use. A database
// that already has the extension stays on TimescaleDB; otherwise
// TimescaleDB is used when the extension is available and its library is
// preloaded (CREATE EXTENSION fails without it). want forces a choice.
func DetectBackend(ctx context.Context, conn *pgx.Conn, want string) (Backend, error) {
	var installed, available, preloaded bool
	err := conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
		EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
		current_setting('shared_preload_libraries') LIKE '%timescaledb%'`).Scan(&installed, &available, &preloaded)
	if err != nil {
		return "", fmt.Errorf("detect backend: %w", err)
	}
	switch {
	case installed:
		return TimescaleDB, nil
	case want == string(Postgres):
		return Postgres, nil
	case want == string(TimescaleDB):
		if !available || !preloaded {
			return "", errors.New("BACKEND=timescaledb but the timescaledb extension is not available and preloaded on this server")
		}
		return TimescaleDB, nil
	case want != "" && want != "auto":
		return "", fmt.Errorf("BACKEND=%q: want auto, postgres or timescaledb", want)
	case available && preloaded:
		return TimescaleDB, nil
	default:
		return Postgres, nil
	}
}

// Migrate detects the backend and applies pending migrations. It is
// idempotent and safe to run from several replicas at once.
func Migrate(ctx context.Context, url, want string, log *slog.Logger) (Backend, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	backend, err := DetectBackend(ctx, conn, want)
	conn.Close(ctx)
	if err != nil {
		return "", err
	}
	cfg.RuntimeParams["proxyusage.backend"] = string(backend)
	cfg.RuntimeParams["timezone"] = "UTC"
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	provider, err := newProvider(db)
	if err != nil {
		return "", err
	}
	results, err := applyPending(ctx, db, provider, backend, log)
	if err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		log.Info("migration applied", slog.String("source", r.Source.Path), slog.Duration("took", r.Duration))
	}
	if backend == TimescaleDB {
		var version string
		if err := db.QueryRowContext(ctx, `SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'`).Scan(&version); err != nil {
			return "", fmt.Errorf("timescaledb version: %w", err)
		}
		if !TimescaleVersionSupported(version) {
			return "", fmt.Errorf("timescaledb %s is too old: %s or later is required (forced refreshes of continuous aggregates)", version, MinTimescaleVersion)
		}
	}
	return backend, nil
}

// MinTimescaleVersion is the oldest TimescaleDB the service runs on: the
// rollup worker refreshes the hierarchical latency aggregate with force
// (TimescaleDB 2.18), see rollup.Worker.refreshAggregates.
const MinTimescaleVersion = "2.18.0"

// TimescaleVersionSupported reports whether an extension version such as
// "2.28.3" (or "2.18.0-dev") is at least MinTimescaleVersion.
func TimescaleVersionSupported(version string) bool {
	parse := func(v string) (major, minor int) {
		v, _, _ = strings.Cut(v, "-")
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return 0, 0
		}
		major, _ = strconv.Atoi(parts[0])
		minor, _ = strconv.Atoi(parts[1])
		return major, minor
	}
	major, minor := parse(version)
	wantMajor, wantMinor := parse(MinTimescaleVersion)
	return major > wantMajor || major == wantMajor && minor >= wantMinor
}

func newProvider(db *sql.DB) (*goose.Provider, error) {
	// The session locker makes replicas starting together apply migrations once.
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, db, schema.Migrations, goose.WithSessionLocker(locker))
}

// Pending reports whether migrations remain to be applied (readiness).
func Pending(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, schema.Migrations)
	if err != nil {
		return false, err
	}
	return provider.HasPending(ctx)
}
