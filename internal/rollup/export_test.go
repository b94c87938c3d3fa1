package rollup

import (
	"context"
	"time"
)

// FastTotals says whether a read took stored peaks as they are (ok) or
// recomputed those of days with connections waiting to be re-paired.
func (r *Reader) FastTotals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, bool, error) {
	out, repaired, err := r.totals(ctx, proxies, Day(from), Day(to), by, false)
	return out, !repaired, err
}

// SlowTotals reads as Totals does, but computes every day's peak from the
// stored intervals (with the pending connections re-paired), ignoring the
// stored peaks and the peak state.
func (r *Reader) SlowTotals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, error) {
	out, _, err := r.totals(ctx, proxies, Day(from), Day(to), by, true)
	return out, err
}

// AggregateColumns and RollupColumns expose the daily aggregate's Go-side
// definition to tests.
const (
	AggregateColumns = aggregateColumns
	RollupColumns    = rollupColumns
)
