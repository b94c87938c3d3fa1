package database

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Transactions take one of three shapes, and all keep one invariant: a
// connection goes back to its pool only outside a transaction.
//
//   - Writes of several statements: pgx.BeginFunc, which rolls back (or
//     closes the connection) on error.
//   - Reads that need one snapshot across round trips: ReadOnly, or
//     ReadPipelined when they go in batches (a round trip per batch, the
//     BEGIN in the first, the end of the transaction not waited for).
//   - Work that must cost one round trip queues BEGIN, its statements and
//     COMMIT in a pipeline on a connection taken from the pool, and gives
//     it back with Release: reads through ReadSnapshot, the ingest
//     writer's flushes directly. A pipeline that fails between its BEGIN
//     and COMMIT leaves the connection in an open or aborted transaction;
//     Release ends it. (pgxpool also destroys such a connection on release;
//     the service does not depend on that.)

// Release returns c to its pool outside any transaction: a connection left
// in one is rolled back, or closed when that fails or a statement is still
// running, so no later user inherits an open or aborted transaction.
func Release(c *pgxpool.Conn) {
	conn := c.Conn()
	if pc := conn.PgConn(); !conn.IsClosed() && (pc.IsBusy() || pc.TxStatus() != txIdle) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if pc.IsBusy() {
			_ = conn.Close(ctx)
		} else if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			_ = conn.Close(ctx)
		}
		cancel()
	}
	c.Release()
}

// txIdle is the ReadyForQuery status of a connection outside a transaction.
const txIdle = 'I'

// InTransaction reports whether c is inside a transaction (open or
// aborted).
func InTransaction(c *pgx.Conn) bool { return c.PgConn().TxStatus() != txIdle }

// ReadOnly runs fn in a read-only repeatable-read transaction: one
// snapshot across several round trips. In a read request marked by
// Standby.Route it runs on a standby that has replayed the request's
// fence, or on pool when the standby cannot serve it; fn may then run a
// second time after a partial run on the standby, so it must build its
// results afresh on each call.
func ReadOnly(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	if r := routeFrom(ctx); r != nil {
		if fallback, err := r.onStandby(ctx, func(c *pgxpool.Conn) error {
			return pgx.BeginTxFunc(ctx, c, opts, fn)
		}); !fallback {
			return err
		}
	}
	return pgx.BeginTxFunc(ctx, pool, opts, fn)
}

// ReadSnapshot runs the queries queue adds in a read-only repeatable-read
// transaction, in one round trip: BEGIN, the queries and COMMIT are sent
// as one pipeline. read consumes the queries' results in order, each of
// them. The connection goes back to the pool outside any transaction,
// whatever failed (see Release). It is routed as ReadOnly is: queue and
// read may run twice, and read must build its results afresh each time.
func ReadSnapshot(ctx context.Context, pool *pgxpool.Pool, queue func(*pgx.Batch), read func(pgx.BatchResults) error) error {
	if r := routeFrom(ctx); r != nil {
		if fallback, err := r.onStandby(ctx, func(c *pgxpool.Conn) error {
			return snapshotOn(ctx, c, queue, read)
		}); !fallback {
			return err
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer Release(conn)
	return snapshotOn(ctx, conn, queue, read)
}

// beginSnapshot starts the read-only repeatable-read transaction of
// ReadSnapshot and ReadPipelined.
const beginSnapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

// Pipe is a read-only repeatable-read transaction on one connection whose
// statements are sent in batches, each one round trip: the first batch
// carries the BEGIN (ReadPipelined).
type Pipe struct {
	conn  *pgx.Conn
	begun bool
}

// Batch sends the statements queue adds in one round trip, and read
// consumes their results in order.
func (p *Pipe) Batch(ctx context.Context, queue func(*pgx.Batch), read func(pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	begin := !p.begun
	if begin {
		b.Queue(beginSnapshot)
	}
	queue(b)
	br := p.conn.SendBatch(ctx, b)
	if begin {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
		p.begun = true
	}
	if err := read(br); err != nil {
		_ = br.Close()
		return err
	}
	return br.Close()
}

// Query runs one statement in the transaction, which a Batch has begun.
func (p *Pipe) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if !p.begun {
		return nil, errors.New("database: Pipe.Query before the first Batch")
	}
	return p.conn.Query(ctx, sql, args...)
}

// ReadPipelined runs fn on a Pipe: a read of one snapshot that costs a
// round trip per Batch and no more. The transaction wrote nothing, so it
// is ended (by Release) after fn returns without the caller waiting for
// it. It is routed as ReadOnly is: fn may run twice, and must build its
// results afresh each time.
func ReadPipelined(ctx context.Context, pool *pgxpool.Pool, fn func(*Pipe) error) error {
	if r := routeFrom(ctx); r != nil {
		if fallback, err := r.onStandby(ctx, func(c *pgxpool.Conn) error {
			return fn(&Pipe{conn: c.Conn()})
		}); !fallback {
			return err
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() { go Release(conn) }()
	return fn(&Pipe{conn: conn.Conn()})
}

func snapshotOn(ctx context.Context, conn *pgxpool.Conn, queue func(*pgx.Batch), read func(pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	b.Queue(beginSnapshot)
	queue(b)
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return err
	}
	if err := read(br); err != nil {
		return err
	}
	if _, err := br.Exec(); err != nil {
		return err
	}
	return br.Close()
}
