package database_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
)

// schedulerRunning reports whether TimescaleDB's job scheduler is
// connected to database dbName.
func schedulerRunning(t *testing.T, conn *pgx.Conn, dbName string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = $1 AND backend_type LIKE 'TimescaleDB Background Worker Scheduler%'`, dbName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func waitScheduler(t *testing.T, conn *pgx.Conn, dbName string, want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for schedulerRunning(t, conn, dbName) != want {
		if time.Now().After(deadline) {
			t.Fatalf("scheduler of %s running = %v after 30 s, want %v", dbName, !want, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A new TimescaleDB database is migrated with its job scheduler stopped
// after the first migration (which creates the extension) and running
// again afterwards; PauseTimescaleJobs stops it and its resume starts it.
func TestMigrateResumesTimescaleJobs(t *testing.T) {
	if !slices.Contains(pgtest.Backends(t), database.TimescaleDB) {
		t.Skip("TimescaleDB is not installed")
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("jobs_%d", os.Getpid())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	url := pgtest.AdminURL(t)
	url = url[:strings.LastIndex(url, "/")+1] + name
	log := slog.New(slog.DiscardHandler)
	if _, err := database.Migrate(ctx, url, string(database.TimescaleDB), log); err != nil {
		t.Fatal(err)
	}
	waitScheduler(t, admin, name, true)

	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	resume, err := database.PauseTimescaleJobs(ctx, db, log)
	if err != nil {
		t.Fatal(err)
	}
	// Stopping waits for the scheduler to exit.
	if schedulerRunning(t, admin, name) {
		t.Fatal("the scheduler still runs after PauseTimescaleJobs")
	}
	// Nothing restarts it meanwhile (the launcher keeps it disabled).
	time.Sleep(time.Second)
	if schedulerRunning(t, admin, name) {
		t.Fatal("the scheduler restarted while paused")
	}
	resume()
	waitScheduler(t, admin, name, true)
}
