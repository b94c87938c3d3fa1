package rollup

import (
	"context"
	"time"
)

// FastTotals and SlowTotals expose the reader's two paths to tests.
func (r *Reader) FastTotals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, bool, error) {
	out := map[Key]*Totals{}
	ok, err := r.fastTotals(ctx, proxies, Day(from), Day(to), by, out)
	return out, ok, err
}

func (r *Reader) SlowTotals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, error) {
	return r.slowTotals(ctx, proxies, Day(from), Day(to), by)
}

// AggregateColumns and RollupColumns expose the daily aggregate's Go-side
// definition to tests.
const (
	AggregateColumns = aggregateColumns
	RollupColumns    = rollupColumns
)
