package database

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATE codes the service acts on, named once
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	UniqueViolation      = "23505" // a claimed idempotency key already exists
	ForeignKeyViolation  = "23503" // a referenced row does not exist
	SerializationFailure = "40001" // retry the transaction
	DeadlockDetected     = "40P01" // retry the transaction
	LockNotAvailable     = "55P03" // TimescaleDB: a concurrent refresh holds the aggregate

	// Classes (the first two characters) of operational failures.
	classConnection          = "08"
	classInsufficientRes     = "53"
	classOperatorIntervening = "57"
)

// HasCode reports whether err is a PostgreSQL error with one of codes.
func HasCode(err error, codes ...string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	for _, c := range codes {
		if pgErr.Code == c {
			return true
		}
	}
	return false
}

// IsUnavailable reports whether err means the database could not be reached
// or refused work for operational reasons (as opposed to a bad query or
// data), so the caller should answer 503 and the client retry.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		pgconn.Timeout(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case classConnection, classInsufficientRes, classOperatorIntervening:
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, net.ErrClosed) || isClosedPool(err)
}

func isClosedPool(err error) bool {
	return err != nil && err.Error() == "closed pool"
}

// IsForeignKeyViolation reports whether err is a write refused because a
// row it references does not exist.
func IsForeignKeyViolation(err error) bool { return HasCode(err, ForeignKeyViolation) }

// IsRetryable reports whether err is a transaction the database aborted to
// break a deadlock or a serialization conflict: running it again can
// succeed.
func IsRetryable(err error) bool { return HasCode(err, DeadlockDetected, SerializationFailure) }
