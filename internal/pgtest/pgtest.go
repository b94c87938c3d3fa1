// Package pgtest gives tests a real PostgreSQL: a throwaway cluster (fsync
// off) started once per test binary and removed when it exits, and a fresh
// database per test cloned from a migrated template, per backend. With
// TEST_DATABASE_URL set, that server is used instead of a local cluster.
package pgtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
)

var (
	once     sync.Once
	setupErr error
	cluster  *database.LocalCluster
	adminURL string
	backends []database.Backend
	tplMu    sync.Mutex
	tplReady = map[database.Backend]bool{}
	counter  atomic.Int64
	tempDir  string
)

// Main runs the tests of a package and removes the cluster afterwards. Use
// it from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		_ = cluster.Kill()
		_ = os.RemoveAll(tempDir)
	}
	os.Exit(code)
}

func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if url := os.Getenv("TEST_DATABASE_URL"); url != "" {
		adminURL = url
	} else {
		dir, err := os.MkdirTemp("", "proxyusage-test-")
		if err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		tempDir = dir
		port, err := database.FreePort()
		if err != nil {
			return err
		}
		cluster = &database.LocalCluster{Dir: dir + "/pg", Port: port, Ephemeral: true, Timescale: true}
		if err := cluster.Start(ctx); err != nil {
			return err
		}
		adminURL = cluster.URL("postgres")
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	backends = []database.Backend{database.Postgres}
	var ts bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
		AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'`).Scan(&ts)
	if err != nil {
		return err
	}
	if ts && os.Getenv("TEST_BACKENDS") != "postgres" {
		backends = append(backends, database.TimescaleDB)
	}
	return nil
}

// Backends lists the backends available to tests: plain PostgreSQL always,
// TimescaleDB when the extension is installed and preloaded.
func Backends(t testing.TB) []database.Backend {
	t.Helper()
	once.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("pgtest: %v", setupErr)
	}
	return backends
}

// AdminURL is a connection string to the test server's postgres database.
func AdminURL(t testing.TB) string {
	Backends(t)
	return adminURL
}

func withDB(url, name string) string {
	i := strings.LastIndex(url, "/")
	q := ""
	if j := strings.Index(url[i:], "?"); j >= 0 {
		q = url[i+j:]
	}
	return url[:i+1] + name + q
}

func template(t testing.TB, b database.Backend) string {
	t.Helper()
	name := "proxyusage_tpl_" + string(b)
	tplMu.Lock()
	defer tplMu.Unlock()
	if tplReady[b] {
		return name
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create template: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := database.Migrate(ctx, withDB(adminURL, name), string(b), log); err != nil {
		t.Fatalf("pgtest: migrate template: %v", err)
	}
	if b == database.TimescaleDB {
		// TimescaleDB's job scheduler keeps a connection to every database
		// with the extension; a template must have none.
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	tplReady[b] = true
	return name
}

// NewDB creates an empty migrated database for backend b and returns its
// URL; it is dropped when the test ends.
func NewDB(t testing.TB, b database.Backend) string {
	t.Helper()
	Backends(t)
	tpl := template(t, b)
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), counter.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	var lastErr error
	for range 50 {
		if _, lastErr = conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tpl); lastErr == nil {
			break
		}
		// "source database is being accessed by other users": a scheduler
		// may still be leaving; try again shortly.
		time.Sleep(100 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("pgtest: create database: %v", lastErr)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return withDB(adminURL, name)
}

// ForEachBackend runs fn as a subtest per available backend.
func ForEachBackend(t *testing.T, fn func(t *testing.T, b database.Backend)) {
	for _, b := range Backends(t) {
		t.Run(string(b), func(t *testing.T) { fn(t, b) })
	}
}

// NewPool returns a small pool on a fresh migrated database of backend b
// (NewDB), closed when the test ends: the fixture of tests that call a
// package's API directly, without the service around it.
func NewPool(t testing.TB, b database.Backend) *pgxpool.Pool {
	t.Helper()
	pool, err := database.Connect(context.Background(), NewDB(t, b), 4)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
