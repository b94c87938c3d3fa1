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
	"github.com/jackc/pgx/v5/stdlib"

	"proxyusage/internal/database"
	"proxyusage/internal/localdb"
)

var (
	once     sync.Once
	setupErr error
	cluster  *localdb.Cluster
	adminURL string
	backends []database.Backend
	tplMu    sync.Mutex
	tplReady = map[database.Backend]bool{}
	counter  atomic.Int64
	tempDir  string

	standbyOnce sync.Once
	standbyErr  error
	standby     *localdb.Cluster
)

// StandbyApplyDelay is how far the test standby's replay trails the
// primary (recovery_min_apply_delay): long enough that a read right after
// a write sees the standby behind, short enough to wait for.
const StandbyApplyDelay = time.Second

// Main runs the tests of a package and removes the cluster afterwards. Use
// it from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	for _, f := range atExit {
		f()
	}
	if standby != nil {
		_ = standby.Kill()
	}
	if cluster != nil {
		_ = cluster.Kill()
		reportCrashes(os.Stderr, cluster.Dir+"/server.log")
		_ = os.RemoveAll(tempDir)
	}
	os.Exit(code)
}

// reportCrashes copies to w the server log around every crash of a server
// process (the postmaster then restarts all of them, and every test
// connected at that moment fails with "the database system is in recovery
// mode"): the log goes with the throwaway cluster, and without it a crash
// in CI leaves no trace of its cause.
func reportCrashes(w io.Writer, logFile string) {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	const before = 30
	printed := -1
	for i, l := range lines {
		if !strings.Contains(l, "terminated by signal") && !strings.Contains(l, "PANIC:") &&
			!strings.Contains(l, "was terminated by exception") && !strings.Contains(l, "terminating any other active server processes") {
			continue
		}
		from := max(i-before, printed+1)
		if printed < 0 {
			fmt.Fprintf(w, "pgtest: a server process crashed; from %s:\n", logFile)
		}
		for _, c := range lines[from : i+1] {
			fmt.Fprintln(w, "  "+c)
		}
		printed = i
	}
}

// atExit holds what AtExit registered.
var atExit []func()

// AtExit registers f to run when Main's tests are done (files a test
// binary shares across its tests, such as a built executable).
func AtExit(f func()) { atExit = append(atExit, f) }

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
		port, err := localdb.FreePort()
		if err != nil {
			return err
		}
		cluster = &localdb.Cluster{Dir: dir + "/pg", Port: port, Ephemeral: true, Timescale: true}
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
		// with the extension; a template must have none. Stopping it waits
		// for it and its jobs to exit and keeps it from starting again.
		tpl, err := pgx.ParseConfig(withDB(adminURL, name))
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		db := stdlib.OpenDB(*tpl)
		_, err = database.PauseTimescaleJobs(ctx, db, log)
		db.Close()
		if err != nil {
			t.Fatalf("pgtest: stop the template's jobs: %v", err)
		}
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

// Standby returns a streaming hot standby of the test cluster, made with
// pg_basebackup -R on first use and shared by the test binary; its replay
// trails the primary by StandbyApplyDelay. Tests may stop and restart it
// (Kill, Restart) or pause its replay, and must leave it running and
// replaying. It needs the local cluster: with TEST_DATABASE_URL the test
// is skipped.
func Standby(t testing.TB) *localdb.Cluster {
	t.Helper()
	Backends(t)
	if cluster == nil {
		t.Skip("pgtest: a standby needs the local test cluster (TEST_DATABASE_URL is set)")
	}
	standbyOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		port, err := localdb.FreePort()
		if err != nil {
			standbyErr = err
			return
		}
		standby, standbyErr = cluster.NewStandby(ctx, tempDir+"/standby", port,
			fmt.Sprintf("recovery_min_apply_delay = '%dms'", StandbyApplyDelay.Milliseconds()))
	})
	if standbyErr != nil {
		t.Fatalf("pgtest: standby: %v", standbyErr)
	}
	return standby
}

// StandbyURL is the URL of dbURL's database (from NewDB) on the standby,
// once the standby has replayed its creation.
func StandbyURL(t testing.TB, dbURL string) string {
	t.Helper()
	s := Standby(t)
	url := withDB(s.URL("postgres"), dbURL[strings.LastIndex(dbURL, "/")+1:strings.Index(dbURL+"?", "?")])
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: the standby has no %s yet: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
