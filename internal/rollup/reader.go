package rollup

import (
	"context"
	"errors"
	"fmt"
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

// Reader answers aggregate queries exactly: rolled-up days come from the
// rollups, days still in the invalidation log are computed from their raw
// events, all in one snapshot. Clean days never touch raw events.
type Reader struct {
	pool   *pgxpool.Pool
	maxAge time.Duration
	rel    rollupRelations
}

// rollupRelations name where rolled-up rows are read from: the rollup
// tables on plain PostgreSQL; on TimescaleDB the continuous aggregates'
// materialization hypertables. Reading those directly skips the
// aggregates' real-time union with raw events (and its planning over every
// raw chunk): the read path already computes every day that is not rolled
// up from raw events, because each stored event logs its day until the
// worker has refreshed it.
type rollupRelations struct {
	daily, latency string
}

// NewReader returns a Reader for a migrated database on backend; maxAge is
// MAX_CONNECTION_AGE. On TimescaleDB it looks up the materialization
// hypertables once, here.
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
	rel, err := resolveRelations(ctx, pool, backend)
	if err != nil {
		return nil, err
	}
	return &Reader{pool: pool, maxAge: maxAge, rel: rel}, nil
}

// resolveRelations names the relations reads use on backend.
func resolveRelations(ctx context.Context, pool *pgxpool.Pool, backend database.Backend) (rollupRelations, error) {
	rel := rollupRelations{daily: "usage_daily", latency: "usage_latency_daily_packed"}
	if backend != database.TimescaleDB {
		return rel, nil
	}
	rows, err := pool.Query(ctx, `
		SELECT view_name, format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
		  FROM timescaledb_information.continuous_aggregates
		 WHERE view_schema = current_schema() AND view_name IN ('usage_daily', 'usage_latency_daily_packed')`)
	if err != nil {
		return rel, fmt.Errorf("rollup: continuous aggregates: %w", err)
	}
	found := 0
	var view, table string
	if _, err := pgx.ForEachRow(rows, []any{&view, &table}, func() error {
		found++
		if view == "usage_daily" {
			rel.daily = table
		} else {
			rel.latency = table
		}
		return nil
	}); err != nil {
		return rel, fmt.Errorf("rollup: continuous aggregates: %w", err)
	}
	if found != 2 {
		return rel, fmt.Errorf("rollup: %d of the 2 continuous aggregates found: is the database migrated?", found)
	}
	return rel, nil
}

// Totals aggregates the events of proxies on the UTC days from..to
// (inclusive), grouped by by.
func (r *Reader) Totals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, error) {
	out := map[Key]*Totals{}
	if len(proxies) == 0 {
		return out, nil
	}
	from, to = Day(from), Day(to)
	// Most reads cover only rolled-up days: one round trip.
	ok, err := r.fastTotals(ctx, proxies, from, to, by, out)
	if err != nil {
		return nil, fmt.Errorf("rollup: read totals: %w", err)
	}
	if ok {
		return out, nil
	}
	return r.slowTotals(ctx, proxies, from, to, by)
}

// DailyBytes returns the bytes sent plus received of proxies per UTC day
// from..to (inclusive), for days with events: what a bill is priced from.
// When none of those proxy-days waits in the invalidation log it reads the
// daily sums alone, in one round trip; pairing of connections cannot change
// bytes, so it does not wait for that. Otherwise it takes Totals' full path.
func (r *Reader) DailyBytes(ctx context.Context, proxies []string, from, to time.Time) (map[time.Time]exact.Sum, error) {
	out := map[time.Time]exact.Sum{}
	if len(proxies) == 0 {
		return out, nil
	}
	from, to = Day(from), Day(to)
	rel := r.rel
	clean, err := r.snapshot(ctx, `SELECT NOT `+dirtyDayExists, []any{proxies, from, to}, func(b *pgx.Batch) {
		b.Queue(fmt.Sprintf(`
SELECT bucket, sum(coalesce(bytes_sent, 0) + coalesce(bytes_received, 0))::text
  FROM %s
 WHERE proxy_id = ANY($1) AND bucket >= $2 AND bucket < $3
 GROUP BY bucket`, rel.daily), proxies, from, to.AddDate(0, 0, 1))
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
	if clean {
		return out, nil
	}
	totals, err := r.slowTotals(ctx, proxies, from, to, ByDay)
	if err != nil {
		return nil, err
	}
	clear(out)
	for k, t := range totals {
		out[k.Day] = t.BytesSent.Add(t.BytesReceived)
	}
	return out, nil
}

// slowTotals answers any request: rolled-up days from the rollups, days
// still in the invalidation log from raw events, peaks of days whose
// connections are being re-paired recomputed, in one snapshot.
func (r *Reader) slowTotals(ctx context.Context, proxies []string, from, to time.Time, by Group) (map[Key]*Totals, error) {
	out := map[Key]*Totals{}
	err := database.ReadOnly(ctx, r.pool, func(tx pgx.Tx) error {
		clear(out) // a run on a standby may have failed part way (database.ReadOnly)
		dirty, err := dirtyDays(ctx, tx, proxies, from, to)
		if err != nil {
			return err
		}
		if err := r.sums(ctx, tx, proxies, from, to, by, dirty, out); err != nil {
			return err
		}
		if err := r.histograms(ctx, tx, proxies, from, to, by, dirty, out); err != nil {
			return err
		}
		return r.peaks(ctx, tx, proxies, from, to, by, dirty, out)
	})
	if err != nil {
		return nil, fmt.Errorf("rollup: read totals: %w", err)
	}
	return out, nil
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

// dirtyDays lists the proxy-days in range still in the invalidation log.
func dirtyDays(ctx context.Context, tx pgx.Tx, proxies []string, from, to time.Time) ([]DayKey, error) {
	rows, err := tx.Query(ctx, `
		SELECT DISTINCT u.proxy_id, u.day
		  FROM usage_invalidations l, unnest(l.proxy_ids, l.days) AS u(proxy_id, day)
		 WHERE l.proxy_ids && $1 AND u.proxy_id = ANY($1) AND u.day BETWEEN $2 AND $3`, proxies, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (DayKey, error) {
		var k DayKey
		err := row.Scan(&k.ProxyID, &k.Day)
		k.Day = k.Day.UTC()
		return k, err
	})
}

// groupColumns selects the group key columns of the final GROUP BY.
func groupColumns(by Group) string {
	switch by {
	case ByDay:
		return "NULL::text, day"
	case ByProxy:
		return "proxy_id, NULL::date"
	case ByProxyDay:
		return "proxy_id, day"
	}
	return "NULL::text, NULL::date"
}

// sumsQuery combines clean rolled-up rows with dirty days recomputed from
// raw events: %[1]s the group columns, %[2]s the daily rollup relation.
// $1 proxies, $2/$3 bucket range, $4/$5 dirty proxy-days.
// Sums of event values travel as the numeric's decimal text, here and in
// every read: exact at any size (a bigint cast fails past 2^63), and
// exact.Sum reads it without allocating.
const sumsQuery = `
WITH dirty AS (
  SELECT * FROM unnest($4::text[], $5::date[]) AS d(proxy_id, day)
), parts AS (
  SELECT d.proxy_id, (d.bucket AT TIME ZONE 'UTC')::date AS day, ` + rollupColumns + `
    FROM %[2]s d
   WHERE d.proxy_id = ANY($1) AND d.bucket >= $2 AND d.bucket < $3
     AND NOT EXISTS (SELECT 1 FROM dirty x WHERE x.proxy_id = d.proxy_id AND x.day = (d.bucket AT TIME ZONE 'UTC')::date)
  UNION ALL
  SELECT x.proxy_id, x.day, ` + aggregateColumns + `
    FROM dirty x
    JOIN usage_events e ON e.proxy_id = x.proxy_id
     AND e.time >= x.day::timestamp AT TIME ZONE 'UTC' AND e.time < (x.day + 1)::timestamp AT TIME ZONE 'UTC'
   GROUP BY x.proxy_id, x.day
)
SELECT %[1]s,
       sum(event_count)::bigint, sum(connection_count)::bigint, sum(success_count)::bigint, sum(error_count)::bigint,
       coalesce(sum(bytes_sent), 0)::text, coalesce(sum(bytes_received), 0)::text,
       coalesce(sum(duration_sum_us), 0)::text, sum(duration_count)::bigint,
       coalesce(sum(latency_sum_us), 0)::text, sum(latency_count)::bigint, max(latency_max_us),
       min(first_event_at), max(last_event_at)
  FROM parts GROUP BY 1, 2`

func (r *Reader) sums(ctx context.Context, tx pgx.Tx, proxies []string, from, to time.Time, by Group, dirty []DayKey, out map[Key]*Totals) error {
	dp, dd := splitDayKeys(dirty)
	rows, err := tx.Query(ctx, fmt.Sprintf(sumsQuery, groupColumns(by), r.rel.daily), proxies, from, to.AddDate(0, 0, 1), dp, dd)
	if err != nil {
		return err
	}
	return scanSums(rows, out)
}

// scanSums merges rows of (group proxy, group day, sums...) into out.
func scanSums(rows pgx.Rows, out map[Key]*Totals) error {
	var (
		proxyID *string
		day     *time.Time
		t       Totals
		maxLat  *int64
	)
	_, err := pgx.ForEachRow(rows, []any{&proxyID, &day, &t.EventCount, &t.ConnectionCount, &t.SuccessCount, &t.ErrorCount,
		&t.BytesSent, &t.BytesReceived, &t.DurationSumUS, &t.DurationCount, &t.LatencySumUS, &t.LatencyCount, &maxLat,
		&t.FirstEventAt, &t.LastEventAt}, func() error {
		k := Key{}
		if proxyID != nil {
			k.ProxyID = *proxyID
		}
		if day != nil {
			k.Day = day.UTC()
		}
		row := t
		if maxLat != nil {
			row.LatencyMaxUS = *maxLat
		}
		k.totals(out).Merge(&row)
		return nil
	})
	return err
}

// histogramQuery: %[1]s the group columns, %[2]s the packed histograms.
const histogramQuery = `
WITH dirty AS (
  SELECT * FROM unnest($4::text[], $5::date[]) AS d(proxy_id, day)
), parts AS (
  SELECT l.proxy_id, (l.bucket AT TIME ZONE 'UTC')::date AS day, u.latency_bucket, u.samples
    FROM %[2]s l, unnest(l.latency_buckets, l.samples) AS u(latency_bucket, samples)
   WHERE l.proxy_id = ANY($1) AND l.bucket >= $2 AND l.bucket < $3
     AND NOT EXISTS (SELECT 1 FROM dirty x WHERE x.proxy_id = l.proxy_id AND x.day = (l.bucket AT TIME ZONE 'UTC')::date)
  UNION ALL
  SELECT x.proxy_id, x.day, e.latency_bucket, count(*)
    FROM dirty x
    JOIN usage_events e ON e.proxy_id = x.proxy_id
     AND e.time >= x.day::timestamp AT TIME ZONE 'UTC' AND e.time < (x.day + 1)::timestamp AT TIME ZONE 'UTC'
   WHERE e.latency_bucket IS NOT NULL
   GROUP BY x.proxy_id, x.day, e.latency_bucket
)
SELECT %[1]s, latency_bucket, sum(samples)::bigint FROM parts GROUP BY 1, 2, 3`

func (r *Reader) histograms(ctx context.Context, tx pgx.Tx, proxies []string, from, to time.Time, by Group, dirty []DayKey, out map[Key]*Totals) error {
	dp, dd := splitDayKeys(dirty)
	rows, err := tx.Query(ctx, fmt.Sprintf(histogramQuery, groupColumns(by), r.rel.latency), proxies, from, to.AddDate(0, 0, 1), dp, dd)
	if err != nil {
		return err
	}
	return scanHistograms(rows, out)
}

// scanHistograms merges rows of (group proxy, group day, latency bucket,
// samples) into out.
func scanHistograms(rows pgx.Rows, out map[Key]*Totals) error {
	var (
		proxyID *string
		day     *time.Time
		bucket  int16
		n       int64
	)
	_, err := pgx.ForEachRow(rows, []any{&proxyID, &day, &bucket, &n}, func() error {
		k := Key{}
		if proxyID != nil {
			k.ProxyID = *proxyID
		}
		if day != nil {
			k.Day = day.UTC()
		}
		k.totals(out).Latency.Inc(bucket, n)
		return nil
	})
	return err
}

// scanFastHistograms merges (proxy, bucket, latency buckets, samples)
// rows, one per proxy-day, into their groups' histograms.
func scanFastHistograms(rows pgx.Rows, by Group, out map[Key]*Totals) error {
	var (
		proxyID string
		bucket  time.Time
		lbs     []int16
		ns      []int64
	)
	_, err := pgx.ForEachRow(rows, []any{&proxyID, &bucket, &lbs, &ns}, func() error {
		if len(lbs) != len(ns) {
			return errors.New("malformed packed latency histogram")
		}
		t := groupKey(by, proxyID, Day(bucket)).totals(out)
		for i, lb := range lbs {
			t.Latency.Inc(lb, ns[i])
		}
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

// Queries of the fast path. They share one repeatable-read snapshot and
// return nothing unless it is clean: no proxy-day of the request waiting
// in the invalidation log and no connection of its proxies waiting to be
// re-paired. $1 proxies, $2/$3 first and last day, $4/$5 bucket range.
const (
	// The logs hold a row per flush with its entries as arrays: the GIN
	// index on proxy_ids finds the rows naming a requested proxy, then
	// their entries are checked.
	dirtyDayExists = `EXISTS (SELECT 1 FROM usage_invalidations l, unnest(l.proxy_ids, l.days) AS u(proxy_id, day)
	 WHERE l.proxy_ids && $1 AND u.proxy_id = ANY($1) AND u.day BETWEEN $2 AND $3)`
	cleanCondition = `NOT ` + dirtyDayExists + `
	AND NOT EXISTS (SELECT 1 FROM usage_connection_invalidations WHERE proxy_ids && $1)`
	fastClean = `SELECT ` + cleanCondition
	// The rows are merged into groups in Go: cheaper here than the
	// database's hash aggregation, which is the slow part of these reads.
	fastSums = `
SELECT proxy_id, bucket, event_count, connection_count, success_count, error_count,
       coalesce(bytes_sent, 0)::text, coalesce(bytes_received, 0)::text,
       coalesce(duration_sum_us, 0)::text, duration_count,
       coalesce(latency_sum_us, 0)::text, latency_count, latency_max_us, first_event_at, last_event_at
  FROM %s
 WHERE proxy_id = ANY($1) AND bucket >= $4 AND bucket < $5 AND ` + cleanCondition
	// Columns a grouping does not use are sent as constants: these are the
	// bulk of a read's rows.
	fastHistograms = `
SELECT %s, latency_buckets, samples
  FROM %s
 WHERE proxy_id = ANY($1) AND bucket >= $4 AND bucket < $5 AND ` + cleanCondition
	fastPeaks = `
SELECT proxy_id, day, peak FROM usage_daily_peak
 WHERE proxy_id = ANY($1) AND day BETWEEN $2 AND $3 AND peak > 0 AND ` + cleanCondition
)

// fastTotals answers from the rollups alone, in one round trip (BEGIN,
// the queries and COMMIT pipelined), when every requested day is rolled
// up. ok is false when some are not: the caller takes the full path.
func (r *Reader) fastTotals(ctx context.Context, proxies []string, from, to time.Time, by Group, out map[Key]*Totals) (ok bool, err error) {
	rel := r.rel
	end := to.AddDate(0, 0, 1)
	args := []any{proxies, from, to, from, end}
	return r.snapshot(ctx, fastClean, args[:3], func(b *pgx.Batch) {
		b.Queue(fmt.Sprintf(fastSums, rel.daily), args...)
		b.Queue(fmt.Sprintf(fastHistograms, histogramKeyColumns(by), rel.latency), args...)
		b.Queue(fastPeaks, args[:3]...)
	}, func(br pgx.BatchResults) error {
		clear(out) // a run on a standby may have failed part way (database.ReadSnapshot)
		var (
			proxyID string
			bucket  time.Time
			t       Totals
			maxLat  *int64
		)
		rows, err := br.Query()
		if err != nil {
			return err
		}
		if _, err := pgx.ForEachRow(rows, []any{&proxyID, &bucket, &t.EventCount, &t.ConnectionCount, &t.SuccessCount, &t.ErrorCount,
			&t.BytesSent, &t.BytesReceived, &t.DurationSumUS, &t.DurationCount, &t.LatencySumUS, &t.LatencyCount, &maxLat,
			&t.FirstEventAt, &t.LastEventAt}, func() error {
			row := t
			if maxLat != nil {
				row.LatencyMaxUS = *maxLat
			}
			groupKey(by, proxyID, Day(bucket)).totals(out).Merge(&row)
			return nil
		}); err != nil {
			return err
		}
		if rows, err = br.Query(); err != nil {
			return err
		}
		if err := scanFastHistograms(rows, by, out); err != nil {
			return err
		}
		if rows, err = br.Query(); err != nil {
			return err
		}
		var dk DayKey
		var peak int
		_, err = pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &peak}, func() error {
			t := groupKey(by, dk.ProxyID, dk.Day.UTC()).totals(out)
			t.Peak = max(t.Peak, peak)
			return nil
		})
		return err
	})
}

// snapshot runs, in one round trip, a read-only repeatable-read
// transaction (database.ReadSnapshot): the clean check (a query returning
// one boolean) and the reads queue adds. read consumes the reads' results
// in order; clean says whether they can be trusted (nothing they cover
// waits for the worker).
func (r *Reader) snapshot(ctx context.Context, check string, checkArgs []any, queue func(*pgx.Batch), read func(pgx.BatchResults) error) (clean bool, err error) {
	err = database.ReadSnapshot(ctx, r.pool, func(b *pgx.Batch) {
		b.Queue(check, checkArgs...)
		queue(b)
	}, func(br pgx.BatchResults) error {
		if err := br.QueryRow().Scan(&clean); err != nil {
			return err
		}
		return read(br)
	})
	return clean, err
}

// peaks reads stored daily peaks and recomputes those of dirty days —
// including days whose connections changed pairing since the last rollup —
// from stored intervals with pending connections re-paired.
func (r *Reader) peaks(ctx context.Context, tx pgx.Tx, proxies []string, from, to time.Time, by Group, dirty []DayKey, out map[Key]*Totals) error {
	perDay := map[DayKey]int{}
	rows, err := tx.Query(ctx, `
		SELECT proxy_id, day, peak FROM usage_daily_peak
		 WHERE proxy_id = ANY($1) AND day BETWEEN $2 AND $3 AND peak > 0`, proxies, from, to)
	if err != nil {
		return err
	}
	var dk DayKey
	var peak int
	if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &peak}, func() error {
		dk.Day = dk.Day.UTC()
		perDay[dk] = peak
		return nil
	}); err != nil {
		return err
	}

	pending, err := pendingConnections(ctx, tx, proxies)
	if err != nil {
		return err
	}
	recompute := map[DayKey]bool{}
	for _, d := range dirty {
		recompute[d] = true
	}
	// Fresh intervals of pending connections, filed under each requested
	// day they cover: the work is the intervals' days within the range,
	// never pending connections × days.
	freshByDay := map[DayKey][]Interval{}
	if len(pending) > 0 {
		stored, err := storedIntervals(ctx, tx, pending)
		if err != nil {
			return err
		}
		fresh, err := freshIntervals(ctx, tx, pending, r.maxAge)
		if err != nil {
			return err
		}
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
	}
	if len(recompute) > 0 {
		days := make([]DayKey, 0, len(recompute))
		for d := range recompute {
			days = append(days, d)
		}
		open, err := overlapping(ctx, tx, days)
		if err != nil {
			return err
		}
		isPending := make(map[ConnKey]bool, len(pending))
		for _, k := range pending {
			isPending[k] = true
		}
		for i, d := range days {
			if i%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			var ivs []Interval
			for _, ki := range open[d] {
				if !isPending[ConnKey{d.ProxyID, ki.ConnectionID}] {
					ivs = append(ivs, ki.Interval)
				}
			}
			perDay[d] = Peak(append(ivs, freshByDay[d]...), d.Day)
		}
	}
	for d, p := range perDay {
		if p == 0 {
			continue
		}
		t := groupKey(by, d.ProxyID, d.Day).totals(out)
		t.Peak = max(t.Peak, p)
	}
	return nil
}

func pendingConnections(ctx context.Context, tx pgx.Tx, proxies []string) ([]ConnKey, error) {
	rows, err := tx.Query(ctx, `
		SELECT DISTINCT u.proxy_id, u.connection_id
		  FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids) AS u(proxy_id, connection_id)
		 WHERE l.proxy_ids && $1 AND u.proxy_id = ANY($1)`, proxies)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ConnKey, error) {
		var k ConnKey
		err := row.Scan(&k.ProxyID, &k.ConnectionID)
		return k, err
	})
}

// OpenConnections counts the proxy's connections open at now: starts with
// no paired end whose start + MAX_CONNECTION_AGE is still in the future.
func (r *Reader) OpenConnections(ctx context.Context, proxyID string, now time.Time) (int, error) {
	var n int
	err := database.ReadOnly(ctx, r.pool, func(tx pgx.Tx) error {
		n = 0 // a run on a standby may have failed part way (database.ReadOnly)
		pending, err := pendingConnections(ctx, tx, []string{proxyID})
		if err != nil {
			return err
		}
		isPending := make(map[string]bool, len(pending))
		for _, k := range pending {
			isPending[k.ConnectionID] = true
		}
		rows, err := tx.Query(ctx, `
			SELECT connection_id FROM usage_connections
			 WHERE proxy_id = $1 AND NOT paired AND end_time > $2`, proxyID, now)
		if err != nil {
			return err
		}
		var cid string
		if _, err := pgx.ForEachRow(rows, []any{&cid}, func() error {
			if !isPending[cid] {
				n++
			}
			return nil
		}); err != nil {
			return err
		}
		fresh, err := freshIntervals(ctx, tx, pending, r.maxAge)
		if err != nil {
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
	if err != nil {
		return 0, fmt.Errorf("rollup: open connections: %w", err)
	}
	return n, nil
}

// ExplainHistograms returns the EXPLAIN (ANALYZE, BUFFERS) plan of the
// one-round-trip path's latency histogram query — the bulk of a clean
// read's rows — for the given request.
func (r *Reader) ExplainHistograms(ctx context.Context, proxies []string, from, to time.Time, by Group) (string, error) {
	from, to = Day(from), Day(to)
	rows, err := r.pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+fmt.Sprintf(fastHistograms, histogramKeyColumns(by), r.rel.latency),
		proxies, from, to, from, to.AddDate(0, 0, 1))
	if err != nil {
		return "", err
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	return strings.Join(plan, "\n"), nil
}

// ExplainSums returns the EXPLAIN (ANALYZE, BUFFERS) plan of the sums query
// for the given request, with the dirty days as they are now. It shows
// which raw events a read touches (tests, operators).
func (r *Reader) ExplainSums(ctx context.Context, proxies []string, from, to time.Time, by Group) (string, error) {
	from, to = Day(from), Day(to)
	var plan []string
	err := database.ReadOnly(ctx, r.pool, func(tx pgx.Tx) error {
		dirty, err := dirtyDays(ctx, tx, proxies, from, to)
		if err != nil {
			return err
		}
		dp, dd := splitDayKeys(dirty)
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+fmt.Sprintf(sumsQuery, groupColumns(by), r.rel.daily),
			proxies, from, to.AddDate(0, 0, 1), dp, dd)
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return "", err
	}
	return strings.Join(plan, "\n"), nil
}

// BytesCTEs returns common table expressions that compute, within the
// statement's one snapshot, the exact bytes sent plus received of the
// proxies on the days that a preceding CTE
// bytes_scope(proxy_ids text[], first_day date, last_day date) names; the
// last CTE is exact_bytes(bytes numeric). It is DailyBytes summed, in a
// statement a caller extends with what else it reads (one round trip).
//
// Days that a pending invalidation-log row of any of the proxies names are
// read from raw events for all of the proxies, the others from the
// rollups. That reads raw events for a few proxy-days that are already
// rolled up (the same bytes: a rollup is its day's events, and a logged
// day is inside the late-data window, so its raw events are kept), and
// spares unnesting every pending log row entry by entry, which under
// steady ingest costs more than the rest of the statement.
func (r *Reader) BytesCTEs() string { return fmt.Sprintf(bytesCTEs, r.rel.daily) }

// bytesCTEs: a log row usually names one day (days <@ ARRAY[days[1]] is
// checked without unnesting); only rows naming several are unnested. Raw
// events are bounded by the first and last logged day as scalar subqueries
// (index conditions, and chunks excluded at run time on TimescaleDB), then
// kept to the logged days.
const bytesCTEs = `
bytes_logged AS (
  SELECT l.days FROM bytes_scope s JOIN usage_invalidations l ON l.proxy_ids && s.proxy_ids
), bytes_days AS (
  SELECT logged.day FROM (
    SELECT days[1] AS day FROM bytes_logged WHERE days <@ ARRAY[days[1]]
    UNION
    SELECT d FROM bytes_logged, unnest(days) AS d WHERE NOT days <@ ARRAY[days[1]]
  ) logged, bytes_scope s WHERE logged.day BETWEEN s.first_day AND s.last_day
), exact_bytes AS (
  SELECT coalesce(sum(b), 0) AS bytes FROM (
    SELECT coalesce(r.bytes_sent, 0) + coalesce(r.bytes_received, 0) AS b
      FROM bytes_scope s JOIN %s r ON r.proxy_id = ANY(s.proxy_ids)
       AND r.bucket >= s.first_day::timestamp AT TIME ZONE 'UTC' AND r.bucket < (s.last_day + 1)::timestamp AT TIME ZONE 'UTC'
     WHERE (r.bucket AT TIME ZONE 'UTC')::date NOT IN (SELECT day FROM bytes_days)
    UNION ALL
    SELECT coalesce(e.bytes_sent, 0) + coalesce(e.bytes_received, 0)
      FROM bytes_scope s JOIN usage_events e ON e.proxy_id = ANY(s.proxy_ids)
       AND e.time >= (SELECT min(day) FROM bytes_days)::timestamp AT TIME ZONE 'UTC'
       AND e.time < (SELECT max(day) + 1 FROM bytes_days)::timestamp AT TIME ZONE 'UTC'
     WHERE (e.time AT TIME ZONE 'UTC')::date IN (SELECT day FROM bytes_days)
  ) parts
)`
