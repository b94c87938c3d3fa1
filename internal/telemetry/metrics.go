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

	HTTPRequests *prometheus.CounterVec   // route, method, status
	HTTPDuration *prometheus.HistogramVec // route, method

	IngestEvents      *prometheus.CounterVec // result: accepted, duplicate, rejected
	IngestBatchSize   prometheus.Histogram
	IngestFlushes     *prometheus.CounterVec // result: ok, error
	IngestFlushTime   prometheus.Histogram
	IngestFlushEvents prometheus.Histogram
	IngestQueueDepth  prometheus.Gauge
	IngestShed        prometheus.Counter
}

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
		IngestEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxyusage_ingest_events_total",
			Help: "Usage events received, by result: accepted (newly stored), duplicate (idempotent repeat), rejected (invalid or refused).",
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
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.HTTPRequests, m.HTTPDuration,
		m.IngestEvents, m.IngestBatchSize, m.IngestFlushes, m.IngestFlushTime,
		m.IngestFlushEvents, m.IngestQueueDepth, m.IngestShed,
	)
	return m
}
