package database_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
)

// onePool is a pool of one connection to a fresh database: every use gets
// the same session.
func onePool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := database.Connect(context.Background(), pgtest.NewDB(t, database.Postgres), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// A pipelined snapshot that fails between its BEGIN and COMMIT hands its
// connection back outside any transaction: rolled back and reused, not
// left for the pool to find (the pool has one connection, so the next
// read gets the same session).
func TestReadSnapshotFailureLeavesNoTransaction(t *testing.T) {
	ctx := context.Background()
	pool := onePool(t)
	var pid int
	err := database.ReadSnapshot(ctx, pool, func(b *pgx.Batch) {
		b.Queue(`SELECT pg_backend_pid()`)
		b.Queue(`SELECT 1 / 0`)
	}, func(br pgx.BatchResults) error {
		if err := br.QueryRow().Scan(&pid); err != nil {
			return err
		}
		_, err := br.Exec()
		return err
	})
	if err == nil {
		t.Fatal("division by zero succeeded")
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if database.InTransaction(conn.Conn()) {
		t.Fatal("connection returned inside a transaction")
	}
	var again int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&again); err != nil {
		t.Fatal(err)
	}
	if again != pid {
		t.Fatalf("session %d was closed (now %d): a failed snapshot should roll back, not lose its connection", pid, again)
	}
}

// Release rolls back whatever a caller left open, committed or not.
func TestReleaseRollsBack(t *testing.T) {
	ctx := context.Background()
	pool := onePool(t)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `BEGIN; CREATE TABLE left_open (x int)`, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	database.Release(conn)
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('left_open') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("an open transaction was committed or kept on release")
	}
}

// The service's sessions never plan parallel workers: the heavy-read gate
// counts one core per read (internal/fairshare).
func TestConnectPlansNoParallelWorkers(t *testing.T) {
	var workers string
	if err := onePool(t).QueryRow(context.Background(), `SHOW max_parallel_workers_per_gather`).Scan(&workers); err != nil {
		t.Fatal(err)
	}
	if workers != "0" {
		t.Fatalf("max_parallel_workers_per_gather = %s, want 0", workers)
	}
}
