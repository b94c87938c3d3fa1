package rollup

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Deltas are what ingest logs per flush in usage_rollup_deltas: for each
// (proxy, UTC day) of the events it stored, the aggregates of
// aggregateColumns over them and their latency histogram. Aggregates of a
// union are aggregates of aggregates: counts and sums add, the maximum
// latency and last event time take the maximum, the first event time the
// minimum, histograms add bucket by bucket. So folding deltas into a daily
// row gives exactly the row recomputed from all its events, in any order
// and any grouping (TestFoldEqualsRecompute).

// deltaEntries unnests the proxy-day entries of the delta rows a query
// selects as l.
const deltaEntries = `unnest(l.proxy_ids, l.days, l.event_counts, l.connection_counts, l.success_counts, l.error_counts,
  l.bytes_sent, l.bytes_received, l.duration_sums_us, l.duration_counts, l.latency_sums_us, l.latency_counts, l.latency_max_us,
  l.first_event_at, l.last_event_at)
  AS u(proxy_id, day, event_count, connection_count, success_count, error_count, bytes_sent, bytes_received,
       duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us, first_event_at, last_event_at)`

// foldDaily adds the entries of delta rows $1 into usage_daily. Nullable
// sums stay NULL while nothing contributed (as sum() over no values), so a
// folded row equals the recomputed one column for column.
const foldDaily = `
INSERT INTO usage_daily AS r (proxy_id, bucket, ` + rollupColumns + `)
SELECT u.proxy_id, u.day::timestamp AT TIME ZONE 'UTC',
       sum(u.event_count)::bigint, sum(u.connection_count)::bigint, sum(u.success_count)::bigint, sum(u.error_count)::bigint,
       sum(u.bytes_sent), sum(u.bytes_received), sum(u.duration_sum_us), sum(u.duration_count)::bigint,
       sum(u.latency_sum_us), sum(u.latency_count)::bigint, max(u.latency_max_us), min(u.first_event_at), max(u.last_event_at)
  FROM usage_rollup_deltas l, ` + deltaEntries + `
 WHERE l.id = ANY($1)
 GROUP BY u.proxy_id, u.day
 ORDER BY 1, 2
ON CONFLICT (proxy_id, bucket) DO UPDATE SET
  event_count      = r.event_count + excluded.event_count,
  connection_count = r.connection_count + excluded.connection_count,
  success_count    = r.success_count + excluded.success_count,
  error_count      = r.error_count + excluded.error_count,
  bytes_sent       = coalesce(r.bytes_sent + excluded.bytes_sent, r.bytes_sent, excluded.bytes_sent),
  bytes_received   = coalesce(r.bytes_received + excluded.bytes_received, r.bytes_received, excluded.bytes_received),
  duration_sum_us  = coalesce(r.duration_sum_us + excluded.duration_sum_us, r.duration_sum_us, excluded.duration_sum_us),
  duration_count   = r.duration_count + excluded.duration_count,
  latency_sum_us   = coalesce(r.latency_sum_us + excluded.latency_sum_us, r.latency_sum_us, excluded.latency_sum_us),
  latency_count    = r.latency_count + excluded.latency_count,
  latency_max_us   = greatest(r.latency_max_us, excluded.latency_max_us),
  first_event_at   = least(r.first_event_at, excluded.first_event_at),
  last_event_at    = greatest(r.last_event_at, excluded.last_event_at)`

// deltaHistograms selects, from the delta rows matching %s (over l), each
// histogram entry with the proxy-day it names by position
// (sql/0010_rollup_deltas.sql says why a function).
const deltaHistograms = `
  SELECT h.proxy_id, h.day, h.latency_bucket, h.samples
    FROM usage_rollup_deltas l,
         usage_rollup_delta_histograms(l.proxy_ids, l.days, l.latency_entries, l.latency_buckets, l.latency_samples) h
   WHERE %s`

// foldHistograms merges the histograms of delta rows ids into
// usage_latency_daily_packed. The stored form is a bytea that SQL cannot
// add to cheaply (sql/0017_histogram_bytes.sql), so the merge happens
// here: the deltas' buckets and the touched rows are read, added, and the
// rows rewritten. The caller holds the fold lock: no other run rewrites
// them meanwhile.
func foldHistograms(ctx context.Context, tx pgx.Tx, ids []int64) error {
	rows, err := tx.Query(ctx, fmt.Sprintf(deltaHistograms, "l.id = ANY($1)"), ids)
	if err != nil {
		return err
	}
	merged := map[DayKey]*Histogram{}
	var dk DayKey
	var bucket int16
	var samples int64
	if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &bucket, &samples}, func() error {
		dk.Day = dk.Day.UTC()
		h := merged[dk]
		if h == nil {
			h = &Histogram{}
			merged[dk] = h
		}
		h.Inc(bucket, samples)
		return nil
	}); err != nil {
		return err
	}
	if len(merged) == 0 {
		return nil
	}
	keys := sortedDays(merged)
	proxies, days := splitDayKeys(keys)
	rows, err = tx.Query(ctx, `
		SELECT p.proxy_id, p.bucket, p.histogram
		  FROM unnest($1::text[], $2::timestamptz[]) AS k(proxy_id, bucket)
		  JOIN usage_latency_daily_packed p ON p.proxy_id = k.proxy_id AND p.bucket = k.bucket`, proxies, days)
	if err != nil {
		return err
	}
	var stored []byte
	if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &stored}, func() error {
		dk.Day = dk.Day.UTC()
		return merged[dk].AddBinary(stored)
	}); err != nil {
		return err
	}
	hists := make([][]byte, len(keys))
	for i, k := range keys {
		hists[i] = merged[k].AppendBinary(nil)
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO usage_latency_daily_packed (proxy_id, bucket, histogram)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bytea[])
		ON CONFLICT (proxy_id, bucket) DO UPDATE SET histogram = excluded.histogram`, proxies, days, hists)
	return err
}

// foldDeltas folds the delta rows ids into the rollups and deletes them,
// in tx: a read's snapshot sees each delta either pending or folded.
func foldDeltas(ctx context.Context, tx pgx.Tx, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, foldDaily, ids); err != nil {
		return err
	}
	if err := foldHistograms(ctx, tx, ids); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM usage_rollup_deltas WHERE id = ANY($1)`, ids)
	return err
}
