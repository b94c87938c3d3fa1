package usage

import (
	"proxyusage/internal/exact"
	"proxyusage/internal/rollup"
)

// Metrics are the daily metric fields (docs/metrics.md), as the API
// serves them for a day, a range or a group. Nullable fields are nil when
// undefined. Byte totals are JSON integers with all their digits, however
// large.
type Metrics struct {
	ConnectionCount              int64     `json:"connectionCount"`
	BytesSent                    exact.Sum `json:"bytesSent"`
	BytesReceived                exact.Sum `json:"bytesReceived"`
	TotalBytes                   exact.Sum `json:"totalBytes"`
	PeakConcurrentConnections    int       `json:"peakConcurrentConnections"`
	AvgConnectionDurationSeconds *float64  `json:"avgConnectionDurationSeconds"`
	ErrorCount                   int64     `json:"errorCount"`
	SuccessCount                 int64     `json:"successCount"`
	ErrorRate                    *float64  `json:"errorRate"`
	SuccessRate                  *float64  `json:"successRate"`
	AvgLatencyMs                 *float64  `json:"avgLatencyMs"`
	P95LatencyMs                 *float64  `json:"p95LatencyMs"`
	MaxLatencyMs                 *float64  `json:"maxLatencyMs"`
	EventCount                   int64     `json:"eventCount"`
}

// MetricsOf derives the served fields from rolled-up totals (nil: no
// events). Averages are weighted by their own counts and rates come from
// the summed counts, so any grouping of the same events gives the same
// answer.
func MetricsOf(t *rollup.Totals) Metrics {
	if t == nil {
		t = &rollup.Totals{}
	}
	m := Metrics{
		ConnectionCount:           t.ConnectionCount,
		BytesSent:                 t.BytesSent,
		BytesReceived:             t.BytesReceived,
		TotalBytes:                t.BytesSent.Add(t.BytesReceived),
		PeakConcurrentConnections: t.Peak,
		ErrorCount:                t.ErrorCount,
		SuccessCount:              t.SuccessCount,
		EventCount:                t.EventCount,
	}
	if t.DurationCount > 0 {
		v := t.DurationSumUS.Float64() / float64(t.DurationCount) / 1e6
		m.AvgConnectionDurationSeconds = &v
	}
	if n := t.ErrorCount + t.SuccessCount; n > 0 {
		e := float64(t.ErrorCount) / float64(n)
		s := float64(t.SuccessCount) / float64(n)
		m.ErrorRate, m.SuccessRate = &e, &s
	}
	if t.LatencyCount > 0 {
		avg := t.LatencySumUS.Float64() / float64(t.LatencyCount) / 1e3
		mx := float64(t.LatencyMaxUS) / 1e3
		m.AvgLatencyMs, m.MaxLatencyMs = &avg, &mx
		if p, ok := t.Latency.Quantile(0.95, t.LatencyMaxUS); ok {
			p /= 1e3
			m.P95LatencyMs = &p
		}
	}
	return m
}
