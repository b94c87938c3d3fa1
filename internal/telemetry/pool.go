package telemetry

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports pgxpool statistics, labelled by pool name
// ("main" for API reads, "ingest" for the group-commit writer).
type PoolCollector struct {
	pools map[string]*pgxpool.Pool

	acquired, idle, total, max, constructing *prometheus.Desc
	acquires, emptyAcquires, canceled        *prometheus.Desc
	acquireSeconds                           *prometheus.Desc
}

// NewPoolCollector returns a collector for the named pools.
func NewPoolCollector(pools map[string]*pgxpool.Pool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("proxyusage_db_pool_"+name, help, []string{"pool"}, nil)
	}
	return &PoolCollector{
		pools:          pools,
		acquired:       d("acquired_conns", "Connections currently checked out of the pool."),
		idle:           d("idle_conns", "Idle connections in the pool."),
		total:          d("total_conns", "Open connections in the pool."),
		max:            d("max_conns", "Maximum connections the pool may open."),
		constructing:   d("constructing_conns", "Connections being opened."),
		acquires:       d("acquires_total", "Successful connection acquisitions."),
		emptyAcquires:  d("empty_acquires_total", "Acquisitions that had to wait because the pool was empty (saturation)."),
		canceled:       d("canceled_acquires_total", "Acquisitions cancelled by their context."),
		acquireSeconds: d("acquire_seconds_total", "Total time in seconds spent acquiring connections."),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.constructing,
		c.acquires, c.emptyAcquires, c.canceled, c.acquireSeconds} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, p := range c.pools {
		s := p.Stat()
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		k := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, name)
		}
		g(c.acquired, float64(s.AcquiredConns()))
		g(c.idle, float64(s.IdleConns()))
		g(c.total, float64(s.TotalConns()))
		g(c.max, float64(s.MaxConns()))
		g(c.constructing, float64(s.ConstructingConns()))
		k(c.acquires, float64(s.AcquireCount()))
		k(c.emptyAcquires, float64(s.EmptyAcquireCount()))
		k(c.canceled, float64(s.CanceledAcquireCount()))
		k(c.acquireSeconds, s.AcquireDuration().Seconds())
	}
}
