package store

import (
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"proxyusage/internal/exact"
	"proxyusage/internal/ingest"
	"proxyusage/internal/rollup"
)

// Rollup deltas: what a flush's stored events add to each (proxy, UTC day)
// of the daily rollups, logged in the flush's transaction as one row of
// usage_rollup_deltas per user whose proxies it wrote to
// (sql/0010_rollup_deltas.sql; by user since sql/0014_deltas_by_user.sql,
// so that a read unnests the entries of its own user only). The rollup worker folds
// them into the rollups and reads add the pending ones, so neither reads
// the raw events again. The same aggregates as internal/rollup's
// (count, FILTERed counts and sums, max, min/max time, histogram); the
// single-statement flush computes them in SQL (deltaCTEs) and the others
// here; TestFoldEqualsRecompute (internal/rollup) writes through both.

// deltaColumns are usage_rollup_deltas' columns in the order both ways of
// writing it fill them.
const deltaColumns = `user_id, proxy_ids, days, event_counts, connection_counts, success_counts, error_counts,
  bytes_sent, bytes_received, duration_sums_us, duration_counts, latency_sums_us, latency_counts, latency_max_us,
  first_event_at, last_event_at, latency_entries, latency_buckets, latency_samples`

// deltaCTEs log the deltas of the events of a preceding CTE chosen,
// numbering its proxy-days by position.
const deltaCTEs = `per_day AS (
  SELECT p.user_id, c.proxy_id, (c.time AT TIME ZONE 'UTC')::date AS day,
         count(*) AS event_count,
         count(*) FILTER (WHERE c.event_type = 'connection_start') AS connection_count,
         count(*) FILTER (WHERE c.event_type = 'connection_end') AS success_count,
         count(*) FILTER (WHERE c.event_type = 'error') AS error_count,
         sum(c.bytes_sent) AS bytes_sent, sum(c.bytes_received) AS bytes_received,
         sum(c.duration_us) FILTER (WHERE c.event_type = 'connection_end') AS duration_sum_us,
         count(c.duration_us) FILTER (WHERE c.event_type = 'connection_end') AS duration_count,
         sum(c.latency_us) AS latency_sum_us, count(c.latency_us) AS latency_count, max(c.latency_us) AS latency_max_us,
         min(c.time) AS first_event_at, max(c.time) AS last_event_at,
         row_number() OVER (PARTITION BY p.user_id ORDER BY c.proxy_id, (c.time AT TIME ZONE 'UTC')::date)::int AS pos
    FROM chosen c JOIN proxies p ON p.id = c.proxy_id
   GROUP BY 1, 2, 3
), per_bucket AS (
  SELECT d.user_id, d.pos, c.latency_bucket, count(*) AS samples
    FROM chosen c JOIN per_day d ON d.proxy_id = c.proxy_id AND d.day = (c.time AT TIME ZONE 'UTC')::date
   WHERE c.latency_bucket IS NOT NULL
   GROUP BY 1, 2, 3
), per_user_hist AS (
  SELECT user_id, array_agg(pos ORDER BY pos, latency_bucket) AS entries, array_agg(latency_bucket ORDER BY pos, latency_bucket) AS buckets,
         array_agg(samples ORDER BY pos, latency_bucket) AS samples
    FROM per_bucket GROUP BY user_id
), per_user AS (
  SELECT user_id, array_agg(proxy_id ORDER BY pos) AS proxy_ids, array_agg(day ORDER BY pos) AS days,
         array_agg(event_count ORDER BY pos) AS event_counts, array_agg(connection_count ORDER BY pos) AS connection_counts,
         array_agg(success_count ORDER BY pos) AS success_counts, array_agg(error_count ORDER BY pos) AS error_counts,
         array_agg(bytes_sent ORDER BY pos) AS bytes_sent, array_agg(bytes_received ORDER BY pos) AS bytes_received,
         array_agg(duration_sum_us ORDER BY pos) AS duration_sums_us, array_agg(duration_count ORDER BY pos) AS duration_counts,
         array_agg(latency_sum_us ORDER BY pos) AS latency_sums_us, array_agg(latency_count ORDER BY pos) AS latency_counts,
         array_agg(latency_max_us ORDER BY pos) AS latency_max_us,
         array_agg(first_event_at ORDER BY pos) AS first_event_at, array_agg(last_event_at ORDER BY pos) AS last_event_at
    FROM per_day GROUP BY user_id
), deltas AS (
  INSERT INTO usage_rollup_deltas (` + deltaColumns + `)
  SELECT u.user_id, u.proxy_ids, u.days, u.event_counts, u.connection_counts, u.success_counts, u.error_counts,
         u.bytes_sent, u.bytes_received, u.duration_sums_us, u.duration_counts, u.latency_sums_us, u.latency_counts, u.latency_max_us,
         u.first_event_at, u.last_event_at, coalesce(h.entries, '{}'), coalesce(h.buckets, '{}'), coalesce(h.samples, '{}')
    FROM per_user u LEFT JOIN per_user_hist h ON h.user_id = u.user_id
)`

// dayDelta is what some events add to one proxy-day.
type dayDelta struct {
	proxyID                   string
	day                       time.Time
	events, conns, succ, errs int64
	sent, received            exact.Sum
	durSum, durCount          int64
	latSum, latCount, latMax  int64
	first, last               time.Time
	hist                      map[int16]int64
}

// DeltaRow is one usage_rollup_deltas row being built (the user is set
// by ByUser).
type DeltaRow struct {
	userID string
	days   []*dayDelta
	index  map[dayKey]int
}

type dayKey struct {
	proxyID string
	day     int64 // days since 1970-01-01
}

// Deltas adds up events per proxy and UTC day.
func Deltas(events []*ingest.Event) *DeltaRow {
	d := &DeltaRow{}
	for _, e := range events {
		d.Add(e)
	}
	return d
}

// Add adds one event.
func (d *DeltaRow) Add(e *ingest.Event) {
	sec := e.Time.Unix()
	if d.index == nil {
		d.index = map[dayKey]int{}
	}
	k := dayKey{e.ProxyID, sec / 86400}
	if sec < 0 && sec%86400 != 0 {
		k.day-- // floor division for instants before 1970
	}
	i, ok := d.index[k]
	if !ok {
		i = len(d.days)
		d.index[k] = i
		d.days = append(d.days, &dayDelta{proxyID: e.ProxyID, day: time.Unix(k.day*86400, 0).UTC(), first: e.Time, last: e.Time})
	}
	x := d.days[i]
	x.events++
	switch e.Type {
	case ingest.ConnectionStart:
		x.conns++
	case ingest.ConnectionEnd:
		x.succ++
		if e.HasDuration {
			x.durSum += e.DurationUS
			x.durCount++
		}
	case ingest.ErrorEvent:
		x.errs++
	}
	x.sent = x.sent.Add(exact.Of(uint64(e.BytesSent)))
	x.received = x.received.Add(exact.Of(uint64(e.BytesReceived)))
	if e.HasLatency {
		if x.latCount == 0 || e.LatencyUS > x.latMax {
			x.latMax = e.LatencyUS
		}
		x.latSum += e.LatencyUS
		x.latCount++
		if x.hist == nil {
			x.hist = map[int16]int64{}
		}
		x.hist[rollup.LatencyBucket(e.LatencyUS)]++
	}
	if e.Time.Before(x.first) {
		x.first = e.Time
	}
	if e.Time.After(x.last) {
		x.last = e.Time
	}
}

// Len is the number of proxy-days.
func (d *DeltaRow) Len() int { return len(d.days) }

// ByUser returns d as one row per user, owner naming each proxy's user,
// in the order of the users' first proxy-days in d.
func (d *DeltaRow) ByUser(owner func(proxyID string) string) []*DeltaRow {
	var out []*DeltaRow
	rows := map[string]*DeltaRow{}
	for _, x := range d.days {
		u := owner(x.proxyID)
		r, ok := rows[u]
		if !ok {
			r = &DeltaRow{userID: u}
			rows[u] = r
			out = append(out, r)
		}
		r.days = append(r.days, x)
	}
	return out
}

// Split returns d as rows of at most n proxy-days each, of d's user.
func (d *DeltaRow) Split(n int) []*DeltaRow {
	var out []*DeltaRow
	for part := range slices.Chunk(d.days, max(n, 1)) {
		out = append(out, &DeltaRow{userID: d.userID, days: part})
	}
	return out
}

// DeltaColumns are usage_rollup_deltas' columns CopyRow fills, in order.
var DeltaColumns = strings.Fields(strings.ReplaceAll(deltaColumns, ",", " "))

// CopyRow is d as a row of DeltaColumns for COPY: a flush logs a row per
// user, and COPY writes them in one round trip at the server cost of
// plain inserts. Sums of bytes may pass 2^63 (numeric); durations and
// latencies are summed in int64 in Go, exact for any flush of at most
// MaxFlushEvents (50,000 events of a year's duration add to 1.6e18 µs).
func (d *DeltaRow) CopyRow() []any {
	n := len(d.days)
	var (
		proxies                   = make([]string, n)
		days, first, last         = make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
		events, conns, succ, errs = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		durCount, latCount        = make([]int64, n), make([]int64, n)
		sent, received            = make([]pgtype.Numeric, n), make([]pgtype.Numeric, n)
		durSum, latSum            = make([]pgtype.Numeric, n), make([]pgtype.Numeric, n)
		latMax                    = make([]pgtype.Int8, n)
		entries                   = []int32{}
		buckets                   = []int16{}
		samples                   = []int64{}
	)
	for i, x := range d.days {
		proxies[i], days[i], first[i], last[i] = x.proxyID, x.day, x.first, x.last
		events[i], conns[i], succ[i], errs[i] = x.events, x.conns, x.succ, x.errs
		durCount[i], latCount[i] = x.durCount, x.latCount
		sent[i], received[i] = numeric(x.sent), numeric(x.received)
		if x.durCount > 0 {
			durSum[i] = pgtype.Numeric{Int: big.NewInt(x.durSum), Valid: true}
		}
		if x.latCount > 0 {
			latSum[i] = pgtype.Numeric{Int: big.NewInt(x.latSum), Valid: true}
			latMax[i] = pgtype.Int8{Int64: x.latMax, Valid: true}
		}
		keys := make([]int16, 0, len(x.hist))
		for k := range x.hist {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			entries = append(entries, int32(i+1))
			buckets = append(buckets, k)
			samples = append(samples, x.hist[k])
		}
	}
	return []any{d.userID, proxies, days, events, conns, succ, errs, sent, received, durSum, durCount, latSum, latCount, latMax,
		first, last, entries, buckets, samples}
}

// DeltaSource is rows as a COPY source of DeltaColumns.
func DeltaSource(rows []*DeltaRow) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].CopyRow(), nil })
}

func numeric(s exact.Sum) pgtype.Numeric { return pgtype.Numeric{Int: s.BigInt(), Valid: true} }
