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

// sameSession takes pool's one connection and checks that it came back
// outside any transaction and still open: session pid, rolled back rather
// than closed. The connection is released when the test ends.
func sameSession(t *testing.T, pool *pgxpool.Pool, pid int) *pgxpool.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	if database.InTransaction(conn.Conn()) {
		t.Fatal("connection returned inside a transaction")
	}
	var again int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&again); err != nil {
		t.Fatal(err)
	}
	if again != pid {
		t.Fatalf("session %d was closed (now %d): a read's transaction should be rolled back, not its connection lost", pid, again)
	}
	return conn
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
	sameSession(t, pool, pid)
}

// ReadPipelined reads one read-only snapshot across its batches and
// queries (a row committed between them is not seen), and its connection
// goes back to the pool outside any transaction, still open, after a
// success and after a failure alike.
func TestReadPipelinedOneSnapshot(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDB(t, database.Postgres)
	pool, err := database.Connect(ctx, url, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Close(ctx) })
	if _, err := writer.Exec(ctx, `CREATE TABLE seen (x int); INSERT INTO seen VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	count := func(row pgx.Row) int {
		var n int
		if err := row.Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var pid int
	err = database.ReadPipelined(ctx, pool, func(p *database.Pipe) error {
		if _, err := p.Query(ctx, `SELECT 1`); err == nil {
			t.Error("a query before the first batch ran outside the transaction")
		}
		if err := p.Batch(ctx, func(b *pgx.Batch) {
			b.Queue(`SELECT pg_backend_pid()`)
			b.Queue(`SELECT count(*) FROM seen`)
		}, func(br pgx.BatchResults) error {
			if err := br.QueryRow().Scan(&pid); err != nil {
				return err
			}
			if n := count(br.QueryRow()); n != 1 {
				t.Errorf("first batch saw %d rows, want 1", n)
			}
			return nil
		}); err != nil {
			return err
		}
		if _, err := writer.Exec(ctx, `INSERT INTO seen VALUES (2)`); err != nil {
			return err
		}
		if err := p.Batch(ctx, func(b *pgx.Batch) {
			b.Queue(`SELECT count(*) FROM seen`)
		}, func(br pgx.BatchResults) error {
			if n := count(br.QueryRow()); n != 1 {
				t.Errorf("second batch saw %d rows, want the first batch's snapshot (1)", n)
			}
			return nil
		}); err != nil {
			return err
		}
		rows, err := p.Query(ctx, `SELECT count(*) FROM seen`)
		if err != nil {
			return err
		}
		if n, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int]); err != nil || n != 1 {
			t.Errorf("query saw %d rows (%v), want 1", n, err)
		}
		// Read-only: a write fails.
		return p.Batch(ctx, func(b *pgx.Batch) { b.Queue(`INSERT INTO seen VALUES (3)`) }, func(br pgx.BatchResults) error {
			_, err := br.Exec()
			return err
		})
	})
	if !database.HasCode(err, "25006") { // read_only_sql_transaction
		t.Fatalf("write in the pipelined read: %v, want read_only_sql_transaction", err)
	}
	// The connection comes back (released in the background) idle and open.
	conn := sameSession(t, pool, pid)
	if n := count(conn.QueryRow(ctx, `SELECT count(*) FROM seen`)); n != 2 {
		t.Fatalf("%d rows after the read, want 2 (the write inside it must not land)", n)
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
