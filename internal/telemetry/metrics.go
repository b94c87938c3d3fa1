// Package telemetry defines every Prometheus metric the service exports,
// in one place, with help text that names the unit. Labels never carry
// user or proxy ids, so series counts stay bounded.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the service's collectors, registered on one registry.
type Metrics struct {
	Registry *prometheus.Registry

	HTTPRequests  *prometheus.CounterVec   // route, method, status
	HTTPDuration  *prometheus.HistogramVec // route, method
	HTTPShed      prometheus.Counter
	HTTPInflight  prometheus.Gauge
	HTTPOpenConns prometheus.Gauge
	ReadyChecks   prometheus.Counter

	IngestEvents      *prometheus.CounterVec // result: accepted, duplicate, rejected
	IngestBatchSize   prometheus.Histogram
	IngestFlushes     *prometheus.CounterVec // result: ok, error
	IngestFlushTime   prometheus.Histogram
	IngestFlushEvents prometheus.Histogram
	IngestQueueDepth  prometheus.Gauge
	IngestShed        prometheus.Counter
	IngestHeldBack    prometheus.Counter
	KeyIndexBytes     prometheus.Gauge
	SharedBuffers     prometheus.Gauge

	RollupRuns        *prometheus.CounterVec // result: ok, error
	RollupLag         prometheus.Gauge
	RollupPending     prometheus.Gauge
	RollupLastSuccess prometheus.Gauge
	RollupDays        prometheus.Counter
	RollupLeader      prometheus.Gauge

	AlertsRecorded    prometheus.Counter
	AlertsAbandoned   prometheus.Counter
	WebhookDeliveries *prometheus.CounterVec // result: delivered, http_error, timeout, network_error, refused
	AlertDeliveryTime prometheus.Histogram
	AlertsLeader      prometheus.Gauge

	ReadsServed   *prometheus.CounterVec // server: standby, primary
	ReadFenceWait prometheus.Histogram
	ReadFallbacks *prometheus.CounterVec // reason: database.FallbackReasons

	HeavyReadsWaiting  prometheus.Gauge
	HeavyReadsRunning  prometheus.Gauge
	HeavyReadsAdmitted prometheus.Counter
	HeavyReadsGaveUp   prometheus.Counter
}

// ReadFallbackReasons are the values of ReadFallbacks' reason label
// (database.FallbackReasons; telemetry does not import database).
var ReadFallbackReasons = []string{"timeout", "conflict", "unavailable", "fence"}

// WebhookResults are the values of WebhookDeliveries' result label.
var WebhookResults = []string{"delivered", "http_error", "timeout", "network_error", "refused"}

// New creates and registers the metrics, with Go runtime and process
// collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_http_requests_total",
			Help: "HTTP requests served, by mux route template, method and status code.",
		}, []string{"route", "method", "status"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "proxyusage_http_request_duration_seconds",
			Help:    "HTTP request latency in seconds, by mux route template and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		HTTPShed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_http_shed_total",
			Help: "Requests refused with 503 because the in-flight or body-memory limit was reached.",
		}),
		HTTPInflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_http_inflight_requests",
			Help: "API requests being handled now (the in-flight limit applies to these; probes and /metrics are not counted).",
		}),
		HTTPOpenConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_http_open_connections",
			Help: "Client connections open now (capped by MAX_CONNS).",
		}),
		ReadyChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_readiness_checks_total",
			Help: "Readiness checks run against the database (/readyz answers from a result at most 1 s old).",
		}),
		IngestEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_ingest_events_total",
			Help: "Usage events received, by result: accepted (newly stored), duplicate (idempotent repeat), rejected (every event of a request refused with a 4xx, at least one per refused body; 5xx failures are not counted).",
		}, []string{"result"}),
		IngestBatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "proxyusage_ingest_request_events",
			Help:    "Events per ingest request (1 for the single-event endpoint).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		IngestFlushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_ingest_flushes_total",
			Help: "Group-commit transactions, by result (ok, error). Fewer flushes than requests means commits are shared.",
		}, []string{"result"}),
		IngestFlushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "proxyusage_ingest_flush_duration_seconds",
			Help:    "Time in seconds to write and commit one group-commit transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		IngestFlushEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "proxyusage_ingest_flush_events",
			Help:    "Events written per group-commit transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		IngestQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_ingest_queue_depth",
			Help: "Ingest requests waiting for a group-commit writer.",
		}),
		IngestShed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_ingest_shed_total",
			Help: "Ingest requests refused with 503 because the queue was full.",
		}),
		IngestHeldBack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_ingest_held_back_seconds_total",
			Help: "Time in seconds group-commit flushes waited because the rollups lagged past INGEST_MAX_ROLLUP_LAG (backpressure).",
		}),
		KeyIndexBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_idempotency_key_index_bytes",
			Help: "Size in bytes of the idempotency keys' indexes (usage_event_keys), read by the key pruner after each run. Every claim touches a random page of it: keep it well inside proxyusage_database_shared_buffers_bytes.",
		}),
		SharedBuffers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_database_shared_buffers_bytes",
			Help: "The database's shared_buffers in bytes, read by the key pruner after each run.",
		}),
		RollupRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_rollup_runs_total",
			Help: "Rollup worker runs, by result (ok, error).",
		}, []string{"result"}),
		RollupLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_rollup_lag_seconds",
			Help: "Age in seconds of the oldest invalidation not yet rolled up (0 when none).",
		}),
		RollupPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_rollup_pending_invalidations",
			Help: "Rollup log rows waiting for the rollup worker (one per ingest flush and log, holding its proxy-day deltas or connections).",
		}),
		RollupLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_rollup_last_success_timestamp_seconds",
			Help: "Unix time in seconds of the last successful rollup run.",
		}),
		RollupDays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_rollup_days_refreshed_total",
			Help: "Proxy-days the rollup worker folded deltas into.",
		}),
		RollupLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_rollup_leader",
			Help: "1 when this replica holds the rollup advisory lock and runs the worker, else 0.",
		}),
		AlertsRecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_alerts_recorded_total",
			Help: "Usage threshold alerts recorded (each user, month and threshold once, whichever replica records it).",
		}),
		AlertsAbandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_alerts_abandoned_total",
			Help: "Alerts given up on after their retry window (24 h by default) without a successful webhook delivery.",
		}),
		WebhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by result: delivered (2xx), http_error (other status), timeout, network_error, refused (private address).",
		}, []string{"result"}),
		AlertDeliveryTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "proxyusage_alert_delivery_seconds",
			Help:    "Seconds from recording an alert to its successful webhook delivery, retries included.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400},
		}),
		AlertsLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_alerts_leader",
			Help: "1 when this replica holds the alert evaluator's advisory lock and records alerts, else 0.",
		}),
		ReadsServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_read_snapshots_total",
			Help: "Read snapshots of read requests with READ_DATABASE_URL set, by the server that answered them: standby, or primary after a fallback.",
		}, []string{"server"}),
		ReadFenceWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "proxyusage_read_fence_wait_seconds",
			Help:    "Seconds a read waited for its standby to replay the primary's WAL position taken after the request arrived (until reached, or READ_FENCE_TIMEOUT).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .2, .5, 1, 2.5},
		}),
		ReadFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_read_fallbacks_total",
			Help: "Read snapshots sent to the primary instead of a standby, by reason: timeout (fence not replayed within READ_FENCE_TIMEOUT), conflict (recovery conflict), unavailable (standby unreachable or not in recovery), fence (primary's WAL position unreadable).",
		}, []string{"reason"}),
		HeavyReadsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_heavy_reads_waiting",
			Help: "Heavy reads (more proxy-days than HEAVY_READ_THRESHOLD) waiting for one of the HEAVY_READ_SLOTS.",
		}),
		HeavyReadsRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxyusage_heavy_reads_running",
			Help: "Heavy reads holding one of the HEAVY_READ_SLOTS now (at most one per caller).",
		}),
		HeavyReadsAdmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_heavy_reads_admitted_total",
			Help: "Heavy reads given a slot.",
		}),
		HeavyReadsGaveUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proxyusage_heavy_reads_gave_up_total",
			Help: "Heavy reads whose request ended (READ_TIMEOUT, or the client left) while they waited for a slot.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.HTTPRequests, m.HTTPDuration, m.HTTPShed, m.HTTPInflight, m.HTTPOpenConns, m.ReadyChecks,
		m.IngestEvents, m.IngestBatchSize, m.IngestFlushes, m.IngestFlushTime,
		m.IngestFlushEvents, m.IngestQueueDepth, m.IngestShed, m.IngestHeldBack, m.KeyIndexBytes, m.SharedBuffers,
		m.RollupRuns, m.RollupLag, m.RollupPending, m.RollupLastSuccess, m.RollupDays, m.RollupLeader,
		m.AlertsRecorded, m.AlertsAbandoned, m.WebhookDeliveries, m.AlertDeliveryTime, m.AlertsLeader,
		m.ReadsServed, m.ReadFenceWait, m.ReadFallbacks,
		m.HeavyReadsWaiting, m.HeavyReadsRunning, m.HeavyReadsAdmitted, m.HeavyReadsGaveUp,
	)
	for _, s := range []string{"standby", "primary"} {
		m.ReadsServed.WithLabelValues(s)
	}
	for _, r := range ReadFallbackReasons {
		m.ReadFallbacks.WithLabelValues(r)
	}
	for _, r := range WebhookResults {
		m.WebhookDeliveries.WithLabelValues(r)
	}
	// Series exist from the start, so dashboards and alerts see zeros.
	for _, r := range []string{"accepted", "duplicate", "rejected"} {
		m.IngestEvents.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.IngestFlushes.WithLabelValues(r)
		m.RollupRuns.WithLabelValues(r)
	}
	return m
}
