// Package rollup owns aggregation: the daily rollup tables (the same on
// both backends), folded from the deltas ingest logs; exact peak
// concurrency; the worker that consumes the logs; and the read path that
// adds the deltas not yet folded.
package rollup

import (
	"time"

	"proxyusage/internal/exact"
)

// aggregateColumns are the per-(proxy, day) aggregates over usage_events,
// the same as the continuous aggregate of sql/0002_rollups.sql and the
// deltas of ingest (internal/ingest/store/delta.go): TestAggregateMatchesMigration
// compares the texts, TestAggregateRowsAgree and TestFoldEqualsRecompute
// the rolled-up rows with a recompute, on both backends.
const aggregateColumns = `
  count(*) AS event_count,
  count(*) FILTER (WHERE event_type = 'connection_start') AS connection_count,
  count(*) FILTER (WHERE event_type = 'connection_end') AS success_count,
  count(*) FILTER (WHERE event_type = 'error') AS error_count,
  sum(bytes_sent) AS bytes_sent,
  sum(bytes_received) AS bytes_received,
  sum(duration_us) FILTER (WHERE event_type = 'connection_end') AS duration_sum_us,
  count(duration_us) FILTER (WHERE event_type = 'connection_end') AS duration_count,
  sum(latency_us) AS latency_sum_us,
  count(latency_us) AS latency_count,
  max(latency_us) AS latency_max_us,
  min(time) AS first_event_at,
  max(time) AS last_event_at`

// rollupColumns lists the same columns as stored in usage_daily.
const rollupColumns = `event_count, connection_count, success_count, error_count, bytes_sent, bytes_received,
  duration_sum_us, duration_count, latency_sum_us, latency_count, latency_max_us, first_event_at, last_event_at`

// Totals are the aggregates of a group of events (one proxy-day, a day
// across proxies, a proxy across days, a whole period). Sums of event
// values are exact at any size: 9,000 events of the largest accepted byte
// count already pass 2^63, and 300,000 of the longest duration do in
// microseconds. The rollups store them as numeric and the reader scans
// their decimal text.
type Totals struct {
	EventCount      int64
	ConnectionCount int64
	SuccessCount    int64
	ErrorCount      int64
	BytesSent       exact.Sum
	BytesReceived   exact.Sum
	DurationSumUS   exact.Sum
	DurationCount   int64
	LatencySumUS    exact.Sum
	LatencyCount    int64
	LatencyMaxUS    int64 // valid when LatencyCount > 0
	FirstEventAt    *time.Time
	LastEventAt     *time.Time
	Peak            int
	Latency         Histogram
}

// Merge adds o into t: sums add, max and peak take the maximum.
func (t *Totals) Merge(o *Totals) {
	t.EventCount += o.EventCount
	t.ConnectionCount += o.ConnectionCount
	t.SuccessCount += o.SuccessCount
	t.ErrorCount += o.ErrorCount
	t.BytesSent = t.BytesSent.Add(o.BytesSent)
	t.BytesReceived = t.BytesReceived.Add(o.BytesReceived)
	t.DurationSumUS = t.DurationSumUS.Add(o.DurationSumUS)
	t.DurationCount += o.DurationCount
	if o.LatencyCount > 0 && (t.LatencyCount == 0 || o.LatencyMaxUS > t.LatencyMaxUS) {
		t.LatencyMaxUS = o.LatencyMaxUS
	}
	t.LatencySumUS = t.LatencySumUS.Add(o.LatencySumUS)
	t.LatencyCount += o.LatencyCount
	if o.FirstEventAt != nil && (t.FirstEventAt == nil || o.FirstEventAt.Before(*t.FirstEventAt)) {
		t.FirstEventAt = o.FirstEventAt
	}
	if o.LastEventAt != nil && (t.LastEventAt == nil || o.LastEventAt.After(*t.LastEventAt)) {
		t.LastEventAt = o.LastEventAt
	}
	t.Peak = max(t.Peak, o.Peak)
	t.Latency.Add(o.Latency)
}
