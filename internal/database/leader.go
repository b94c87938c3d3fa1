package database

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Leader holds a session-level advisory lock on a dedicated pool
// connection, making one replica at a time run a background loop. Its
// holder's session ending (crash, network) releases the lock, so another
// replica takes over. Not safe for concurrent use: one loop owns it.
type Leader struct {
	Pool *pgxpool.Pool
	Key  int64
	// OnChange, when set, is told when leadership is gained or lost
	// (a gauge, a log line).
	OnChange func(held bool)

	conn *pgxpool.Conn
}

// Acquire reports whether this process leads, taking the lock when it is
// free and checking that the session holding it is still alive.
func (l *Leader) Acquire(ctx context.Context) bool {
	if l.conn != nil {
		if err := l.conn.Ping(ctx); err == nil {
			return true
		}
		l.Release()
	}
	conn, err := l.Pool.Acquire(ctx)
	if err != nil {
		return false
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, l.Key).Scan(&ok); err != nil || !ok {
		conn.Release()
		return false
	}
	l.conn = conn
	if l.OnChange != nil {
		l.OnChange(true)
	}
	return true
}

// Release gives leadership up, if held.
func (l *Leader) Release() {
	if l.conn == nil {
		return
	}
	// Closing the session releases the lock even if unlock fails.
	_ = l.conn.Conn().Close(context.Background())
	l.conn.Release()
	l.conn = nil
	if l.OnChange != nil {
		l.OnChange(false)
	}
}
