package database

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/pressly/goose/v3"
)

// applyPending applies pending migrations. On TimescaleDB it pauses the
// database's jobs meanwhile (PauseTimescaleJobs), under LockMigrateJobs so
// that replicas starting together pause, migrate and resume one at a time.
func applyPending(ctx context.Context, db *sql.DB, provider *goose.Provider, backend Backend, log *slog.Logger) ([]*goose.MigrationResult, error) {
	if backend != TimescaleDB {
		return provider.Up(ctx)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, LockMigrateJobs); err != nil {
		return nil, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, LockMigrateJobs)
	}()
	pending, err := provider.HasPending(ctx)
	if err != nil || !pending {
		return nil, err
	}
	var results []*goose.MigrationResult
	var installed bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')`).Scan(&installed); err != nil {
		return nil, err
	}
	if !installed {
		// A new database: the first migration creates the extension, and
		// there is no job to pause before it.
		r, err := provider.UpByOne(ctx)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	resume, err := PauseTimescaleJobs(ctx, db, log)
	if err != nil {
		return results, err
	}
	defer resume()
	more, err := provider.Up(ctx)
	return append(results, more...), err
}

// PauseTimescaleJobs stops TimescaleDB's job scheduler for db's database
// and returns the function that starts it again. Stopping the scheduler
// ends the jobs it is running and starts no new one until it is resumed,
// as timescaledb_pre_restore does for pg_restore. Migrations need that: a
// refresh policy that starts just as a migration drops its continuous
// aggregate dereferences the dropped materialization table
// (policy_refresh_cagg_check_if_last_policy in TimescaleDB 2.28), and the
// worker's crash restarts the whole server. Only a superuser may stop the
// scheduler; for any other role the jobs keep running, and that is logged.
func PauseTimescaleJobs(ctx context.Context, db *sql.DB, log *slog.Logger) (resume func(), err error) {
	var superuser bool
	if err := db.QueryRowContext(ctx, `SELECT current_setting('is_superuser') = 'on'`).Scan(&superuser); err != nil {
		return nil, fmt.Errorf("pause timescaledb jobs: %w", err)
	}
	if !superuser {
		log.Warn("timescaledb jobs keep running during migrations: pausing them needs a superuser")
		return func() {}, nil
	}
	if _, err := db.ExecContext(ctx, `SELECT _timescaledb_functions.stop_background_workers()`); err != nil {
		return nil, fmt.Errorf("pause timescaledb jobs: %w", err)
	}
	return func() {
		// Resumed even when ctx is done: a database left without its
		// scheduler runs no policy until the server restarts.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `SELECT _timescaledb_functions.start_background_workers()`); err != nil {
			log.Error("resume timescaledb jobs", slog.Any("error", err))
		}
	}, nil
}
