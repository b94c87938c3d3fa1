package database

import (
	"context"
	"time"
)

// NewProvider exposes the goose provider to migration tests.
var NewProvider = newProvider

// FenceAfter exposes the shared fence fetch: the fence for a request that
// arrived at arrived, and how many fetches ran so far.
func (s *Standby) FenceAfter(ctx context.Context, arrived time.Time) (lsn string, fetches int64, err error) {
	lsn, err = s.fence.after(ctx, arrived)
	return lsn, s.fence.fetches.Load(), err
}
