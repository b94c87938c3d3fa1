package rollup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/exact"
)

// Group says how Totals are grouped.
type Group int

const (
	ByNone     Group = iota // one group for everything
	ByDay                   // per day, across proxies
	ByProxy                 // per proxy, across days
	ByProxyDay              // per proxy-day
)

// Key identifies a group; fields not grouped by are zero.
type Key struct {
	ProxyID string
	Day     time.Time
}

// Reader answers aggregate queries exactly: the daily rollups plus the
// deltas ingest logged that the worker has not folded yet, all in one
// snapshot, so every acknowledged event is in the very next read and no
// read scans raw events for sums or histograms. Peaks of proxies with
// connections waiting to be re-paired are recomputed from their intervals.
type Reader struct {
	pool   *pgxpool.Pool
	maxAge time.Duration
}

// NewReader returns a Reader for a migrated database on backend; maxAge is
// MAX_CONNECTION_AGE. Both backends read the same tables.
func NewReader(ctx context.Context, pool *pgxpool.Pool, backend database.Backend, maxAge time.Duration) (*Reader, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, errors.New("rollup: pool is required"))
	}
	if backend != database.Postgres && backend != database.TimescaleDB {
		errs = append(errs, fmt.Errorf("rollup: unknown backend %q", backend))
	}
	if maxAge <= 0 {
		errs = append(errs, errors.New("rollup: max connection age must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Reader{pool: pool, maxAge: maxAge}, nil
}

// Totals aggregates the events of proxies on the UTC days from..to
// (inclusive), grouped by by.
func (r *Reader) Totals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, error) {
	out, _, err := r.totals(ctx, proxies, Day(from), Day(to), by, false)
	return out, err
}

// DailyBytes returns the bytes sent plus received of proxies per UTC day
// from..to (inclusive), for days with events: what a bill is priced from.
// One round trip: the daily rollups plus the pending deltas.
func (r *Reader) DailyBytes(ctx context.Context, proxies []string, from, to time.Time) (map[time.Time]exact.Sum, error) {
	out := map[time.Time]exact.Sum{}
	if len(proxies) == 0 {
		return out, nil
	}
	from, to = Day(from), Day(to)
	err := database.ReadSnapshot(ctx, r.pool, func(b *pgx.Batch) {
		b.Queue(dailyBytes, proxies, from, to, from, to.AddDate(0, 0, 1))
	}, func(br pgx.BatchResults) error {
		clear(out) // a run on a standby may have failed part way (database.ReadSnapshot)
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var day time.Time
		var n exact.Sum
		_, err = pgx.ForEachRow(rows, []any{&day, &n}, func() error {
			out[Day(day)] = n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rollup: read bytes: %w", err)
	}
	return out, nil
}

// totals answers a request in one snapshot: the daily rollups plus the
// pending deltas, the stored peaks, and what the request's connections
// waiting to be re-paired hold (stored intervals and events) in one round
// trip; when there are such connections (repaired), the peaks of the days
// they touch are recomputed, in one more round trip (two when a day has
// no peak state yet). With fromIntervals (tests), every day's peak is
// computed from the stored intervals instead, as for a day without state.
func (r *Reader) totals(ctx context.Context, proxies []string, from, to time.Time, by Group, fromIntervals bool) (out map[Key]*Totals, repaired bool, err error) {
	out = map[Key]*Totals{}
	if len(proxies) == 0 {
		return out, false, nil
	}
	args := []any{proxies, from, to, from, to.AddDate(0, 0, 1)}
	err = database.ReadPipelined(ctx, r.pool, func(p *database.Pipe) error {
		clear(out) // a run on a standby may have failed part way (database.ReadPipelined)
		perDay := map[DayKey]int{}
		var stored, fresh map[ConnKey][]Interval
		err := p.Batch(ctx, func(b *pgx.Batch) {
			b.Queue(rollupSums, args...)
			b.Queue(pendingSums, args...)
			b.Queue(fmt.Sprintf(rollupHistograms, histogramKeyColumns(by)), args...)
			b.Queue(pendingHistograms, args...)
			b.Queue(storedPeaks, args[:3]...)
			b.Queue(pendingIntervals, proxies)
		}, func(br pgx.BatchResults) error {
			for _, scan := range []func(pgx.Rows, Group, map[Key]*Totals) error{scanDailyRows, scanDailyRows, scanFastHistograms, scanPendingHistograms} {
				rows, err := br.Query()
				if err != nil {
					return err
				}
				if err := scan(rows, by, out); err != nil {
					return err
				}
			}
			rows, err := br.Query()
			if err != nil {
				return err
			}
			var dk DayKey
			var peak int
			if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &peak}, func() error {
				perDay[DayKey{dk.ProxyID, dk.Day.UTC()}] = peak
				return nil
			}); err != nil {
				return err
			}
			if rows, err = br.Query(); err != nil {
				return err
			}
			stored, fresh, err = pendingPairing(rows, r.maxAge)
			return err
		})
		if err != nil {
			return err
		}
		repaired = len(stored) > 0 || len(fresh) > 0
		var all []DayKey
		if fromIntervals {
			clear(perDay)
			for _, id := range proxies {
				for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
					all = append(all, DayKey{id, d})
				}
			}
		}
		if repaired || fromIntervals {
			if err := r.repairedPeaks(ctx, p, from, to, stored, fresh, all, perDay); err != nil {
				return err
			}
		}
		for d, peak := range perDay {
			if peak == 0 {
				continue
			}
			t := groupKey(by, d.ProxyID, d.Day).totals(out)
			t.Peak = max(t.Peak, peak)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("rollup: read totals: %w", err)
	}
	return out, repaired, nil
}

func groupKey(by Group, proxyID string, day time.Time) Key {
	switch by {
	case ByDay:
		return Key{Day: day}
	case ByProxy:
		return Key{ProxyID: proxyID}
	case ByProxyDay:
		return Key{ProxyID: proxyID, Day: day}
	}
	return Key{}
}

func (k Key) totals(out map[Key]*Totals) *Totals {
	t, ok := out[k]
	if !ok {
		t = &Totals{}
		out[k] = t
	}
	return t
}

// scanDailyRows merges rows of (proxy, day, the daily columns) — rolled-up
// rows or pending delta entries — into their groups.
func scanDailyRows(rows pgx.Rows, by Group, out map[Key]*Totals) error {
	var (
		proxyID string
		bucket  time.Time
		t       Totals
		maxLat  *int64
	)
	_, err := pgx.ForEachRow(rows, []any{&proxyID, &bucket, &t.EventCount, &t.ConnectionCount, &t.SuccessCount, &t.ErrorCount,
		&t.BytesSent, &t.BytesReceived, &t.DurationSumUS, &t.DurationCount, &t.LatencySumUS, &t.LatencyCount, &maxLat,
		&t.FirstEventAt, &t.LastEventAt}, func() error {
		row := t
		if maxLat != nil {
			row.LatencyMaxUS = *maxLat
		}
		groupKey(by, proxyID, Day(bucket)).totals(out).Merge(&row)
		return nil
	})
	return err
}

// scanFastHistograms merges (proxy, bucket, stored histogram) rows, one
// per proxy-day, into their groups' histograms.
func scanFastHistograms(rows pgx.Rows, by Group, out map[Key]*Totals) error {
	var (
		proxyID string
		bucket  time.Time
		hist    []byte
	)
	_, err := pgx.ForEachRow(rows, []any{&proxyID, &bucket, &hist}, func() error {
		return groupKey(by, proxyID, Day(bucket)).totals(out).Latency.AddBinary(hist)
	})
	return err
}

// scanPendingHistograms merges (proxy, day, latency bucket, samples) rows
// of pending deltas into their groups' histograms.
func scanPendingHistograms(rows pgx.Rows, by Group, out map[Key]*Totals) error {
	var (
		proxyID string
		day     time.Time
		lb      int16
		n       int64
	)
	_, err := pgx.ForEachRow(rows, []any{&proxyID, &day, &lb, &n}, func() error {
		groupKey(by, proxyID, Day(day)).totals(out).Latency.Inc(lb, n)
		return nil
	})
	return err
}

// histogramKeyColumns selects the proxy and bucket of histogram rows, or
// constants for what the grouping ignores.
func histogramKeyColumns(by Group) string {
	switch by {
	case ByDay:
		return "''::text, bucket"
	case ByProxy:
		return "proxy_id, '2000-01-01'::timestamptz"
	case ByProxyDay:
		return "proxy_id, bucket"
	}
	return "''::text, '2000-01-01'::timestamptz"
}

// pendingRows selects the rows (l) of the delta or connection log of the
// owners of proxies $1: a proxy's owner never changes, and the logs' btree
// on user_id finds them (sql/0014_deltas_by_user.sql, 0015). Rows of
// several users (an empty user_id: from a replica older than 0014 during a
// rolling deploy) are read too; callers still filter entries by proxy.
const pendingRows = `l.user_id = ANY(ARRAY(SELECT DISTINCT p.user_id FROM proxies p WHERE p.id = ANY($1)) || ''::text)`

// Queries of a read. $1 proxies, $2/$3 first and last day, $4/$5 bucket
// range. The rows are merged into groups in Go: cheaper here than the
// database's hash aggregation, which was the slow part of these reads.
// Sums of event values travel as the numeric's decimal text: exact at any
// size (a bigint cast fails past 2^63), and exact.Sum reads it without
// allocating.
const (
	rollupSums = `
SELECT proxy_id, bucket, event_count, connection_count, success_count, error_count,
       coalesce(bytes_sent, 0)::text, coalesce(bytes_received, 0)::text,
       coalesce(duration_sum_us, 0)::text, duration_count,
       coalesce(latency_sum_us, 0)::text, latency_count, latency_max_us, first_event_at, last_event_at
  FROM usage_daily
 WHERE proxy_id = ANY($1) AND bucket >= $4 AND bucket < $5 AND $2::date <= $3::date`
	// The delta log holds a row per flush and user with its proxy-days as
	// arrays: the rows of the requested proxies' owners are found by
	// user_id (pendingRows), then their entries are checked.
	pendingSums = `
SELECT u.proxy_id, u.day, u.event_count, u.connection_count, u.success_count, u.error_count,
       u.bytes_sent::text, u.bytes_received::text,
       coalesce(u.duration_sum_us, 0)::text, u.duration_count,
       coalesce(u.latency_sum_us, 0)::text, u.latency_count, u.latency_max_us, u.first_event_at, u.last_event_at
  FROM usage_rollup_deltas l, ` + deltaEntries + `
 WHERE ` + pendingRows + ` AND u.proxy_id = ANY($1) AND u.day BETWEEN $2 AND $3 AND $4::timestamptz < $5::timestamptz`
	// Columns a grouping does not use are sent as constants: these are the
	// bulk of a read's rows.
	rollupHistograms = `
SELECT %s, histogram
  FROM usage_latency_daily_packed
 WHERE proxy_id = ANY($1) AND bucket >= $4 AND bucket < $5 AND $2::date <= $3::date`
	// storedPeaks are final unless a connection of the proxies waits to
	// be re-paired (pendingIntervals).
	storedPeaks = `
SELECT proxy_id, day, peak FROM usage_daily_peak
 WHERE proxy_id = ANY($1) AND day BETWEEN $2 AND $3 AND peak > 0`
	// dailyBytes is DailyBytes' statement.
	dailyBytes = `
SELECT day, sum(b)::text FROM (
  SELECT bucket AS day, coalesce(bytes_sent, 0) + coalesce(bytes_received, 0) AS b
    FROM usage_daily WHERE proxy_id = ANY($1) AND bucket >= $4 AND bucket < $5
  UNION ALL
  SELECT u.day::timestamp AT TIME ZONE 'UTC', u.bytes_sent + u.bytes_received
    FROM usage_rollup_deltas l, unnest(l.proxy_ids, l.days, l.bytes_sent, l.bytes_received) AS u(proxy_id, day, bytes_sent, bytes_received)
   WHERE ` + pendingRows + ` AND u.proxy_id = ANY($1) AND u.day BETWEEN $2 AND $3
) parts GROUP BY day`
)

// pendingHistograms reads the histogram entries of the pending deltas of
// the request.
// The function picks the entries of the requested proxy-days inside each
// row (sql/0012_delta_histogram_filter.sql): a read costs the entries it
// wants, not every entry of every row naming a requested proxy.
const pendingHistograms = `
SELECT h.proxy_id, h.day, h.latency_bucket, h.samples
  FROM usage_rollup_deltas l,
       usage_rollup_delta_histograms_for(l.proxy_ids, l.days, l.latency_entries, l.latency_buckets, l.latency_samples, $1, $2, $3) h
 WHERE ` + pendingRows + ` AND $4::timestamptz < $5::timestamptz`

// repairedPeaks replaces, in perDay (the stored peaks), the peaks of the
// days from..to that the pending connections' intervals touch, as they
// will be once stored is replaced by fresh: from the days' peak state, or
// from their stored intervals where a day has none. Days in fromIntervals
// are computed from their stored intervals whatever their state.
func (r *Reader) repairedPeaks(ctx context.Context, p *database.Pipe, from, to time.Time, stored, fresh map[ConnKey][]Interval, fromIntervals []DayKey, perDay map[DayKey]int) error {
	recompute := map[DayKey]bool{}
	// Fresh intervals of pending connections, filed under each requested
	// day they cover: the work is the intervals' days within the range,
	// never pending connections × days.
	freshByDay := map[DayKey][]Interval{}
	for k, ivs := range stored {
		for _, iv := range ivs {
			for d := range iv.daysWithin(from, to) {
				recompute[DayKey{k.ProxyID, d}] = true
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	for k, ivs := range fresh {
		for _, iv := range ivs {
			for d := range iv.daysWithin(from, to) {
				dk := DayKey{k.ProxyID, d}
				recompute[dk] = true
				freshByDay[dk] = append(freshByDay[dk], iv)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	missing := fromIntervals
	if len(fromIntervals) == 0 && len(recompute) > 0 {
		days := make([]DayKey, 0, len(recompute))
		for d := range recompute {
			days = append(days, d)
		}
		// Days with stored peak state re-read only the slots of the
		// pending connections' edges; the others all their intervals.
		fromSlots, without, err := pendingDayPeaks(ctx, p, days, stored, fresh)
		if err != nil {
			return err
		}
		maps.Copy(perDay, fromSlots)
		missing = without
	}
	if len(missing) == 0 {
		return nil
	}
	open, err := overlapping(ctx, p, missing)
	if err != nil {
		return err
	}
	for i, d := range missing {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		var ivs []Interval
		for _, ki := range open[d] {
			// A pending connection's stored intervals are replaced by its fresh ones.
			if _, ok := stored[ConnKey{d.ProxyID, ki.ConnectionID}]; !ok {
				ivs = append(ivs, ki.Interval)
			}
		}
		perDay[d] = Peak(append(ivs, freshByDay[d]...), d.Day)
	}
	return nil
}

// OpenConnections counts the proxy's connections open at now: starts with
// no paired end whose start + MAX_CONNECTION_AGE is still in the future.
// One round trip: the stored unpaired intervals, and the pending
// connections' stored intervals and events (theirs replace the stored).
func (r *Reader) OpenConnections(ctx context.Context, proxyID string, now time.Time) (int, error) {
	var n int
	err := database.ReadPipelined(ctx, r.pool, func(p *database.Pipe) error {
		n = 0 // a run on a standby may have failed part way (database.ReadPipelined)
		return p.Batch(ctx, func(b *pgx.Batch) {
			b.Queue(pendingIntervals, []string{proxyID})
			b.Queue(`
				SELECT connection_id FROM usage_connections
				 WHERE proxy_id = $1 AND NOT paired AND end_time > $2 AND start_time IS NOT NULL`, proxyID, now)
		}, func(br pgx.BatchResults) error {
			rows, err := br.Query()
			if err != nil {
				return err
			}
			stored, fresh, err := pendingPairing(rows, r.maxAge)
			if err != nil {
				return err
			}
			if rows, err = br.Query(); err != nil {
				return err
			}
			var cid string
			if _, err := pgx.ForEachRow(rows, []any{&cid}, func() error {
				if _, pending := stored[ConnKey{proxyID, cid}]; !pending {
					n++
				}
				return nil
			}); err != nil {
				return err
			}
			for _, ivs := range fresh {
				for _, iv := range ivs {
					if !iv.Paired && iv.End.After(now) {
						n++
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("rollup: open connections: %w", err)
	}
	return n, nil
}

// ExplainHistograms returns the EXPLAIN (ANALYZE, BUFFERS) plan of the
// rolled-up latency histogram query — the bulk of a read's rows — for the
// given request.
func (r *Reader) ExplainHistograms(ctx context.Context, proxies []string, from, to time.Time, by Group) (string, error) {
	from, to = Day(from), Day(to)
	return r.explain(ctx, fmt.Sprintf(rollupHistograms, histogramKeyColumns(by)), proxies, from, to)
}

// ExplainSums returns the EXPLAIN (ANALYZE, BUFFERS) plans of the sums
// queries (rolled-up rows, then pending deltas) for the given request. They
// show what a read touches (tests, operators).
func (r *Reader) ExplainSums(ctx context.Context, proxies []string, from, to time.Time, by Group) (string, error) {
	from, to = Day(from), Day(to)
	var plans []string
	for _, q := range []string{rollupSums, pendingSums} {
		plan, err := r.explain(ctx, q, proxies, from, to)
		if err != nil {
			return "", err
		}
		plans = append(plans, plan)
	}
	return strings.Join(plans, "\n"), nil
}

func (r *Reader) explain(ctx context.Context, query string, proxies []string, from, to time.Time) (string, error) {
	rows, err := r.pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+query, proxies, from, to, from, to.AddDate(0, 0, 1))
	if err != nil {
		return "", err
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	return strings.Join(plan, "\n"), nil
}

// BytesCTEs returns common table expressions that compute, within the
// statement's one snapshot, the exact bytes sent plus received of the
// proxies on the days that a preceding CTE
// bytes_scope(proxy_ids text[], first_day date, last_day date) names; the
// last CTE is exact_bytes(bytes numeric). It is DailyBytes summed (the
// rollups plus the pending deltas), in a statement a caller extends with
// what else it reads (one round trip).
func (r *Reader) BytesCTEs() string { return bytesCTEs }

const bytesCTEs = `
bytes_users AS (
  SELECT DISTINCT p.user_id FROM bytes_scope s JOIN proxies p ON p.id = ANY(s.proxy_ids)
  UNION SELECT '' -- rows of several users (pendingRows)
), exact_bytes AS (
  SELECT coalesce(sum(b), 0) AS bytes FROM (
    SELECT coalesce(r.bytes_sent, 0) + coalesce(r.bytes_received, 0) AS b
      FROM bytes_scope s JOIN usage_daily r ON r.proxy_id = ANY(s.proxy_ids)
       AND r.bucket >= s.first_day::timestamp AT TIME ZONE 'UTC' AND r.bucket < (s.last_day + 1)::timestamp AT TIME ZONE 'UTC'
    UNION ALL
    SELECT u.bytes_sent + u.bytes_received
      FROM bytes_scope s CROSS JOIN bytes_users o JOIN usage_rollup_deltas l ON l.user_id = o.user_id
     CROSS JOIN LATERAL unnest(l.proxy_ids, l.days, l.bytes_sent, l.bytes_received) AS u(proxy_id, day, bytes_sent, bytes_received)
     WHERE u.proxy_id = ANY(s.proxy_ids) AND u.day BETWEEN s.first_day AND s.last_day
  ) parts
)`
