// Package config reads the service configuration from the environment
// (README, "Configuration"). Flags in cmd/ may override individual fields.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"time"

	"proxyusage/internal/billing"
)

// Config is the whole service configuration.
type Config struct {
	DatabaseURL string // empty: a local cluster under DataDir
	// ReadDatabaseURL names streaming standbys of DatabaseURL's database
	// (one, or several in a multi-host URL with target_session_attrs);
	// empty: every read on the primary.
	ReadDatabaseURL string
	// ReadFenceTimeout bounds how long a read waits for its standby to
	// replay the primary's WAL position taken after the request arrived;
	// past it the read goes to the primary.
	ReadFenceTimeout time.Duration
	DataDir          string
	HTTPAddr         string
	Backend          string // auto (detect), postgres or timescaledb
	// DatabasePoolSize bounds the main pool's connections (the ingest
	// writer has its own pool, sized by IngestWriters).
	DatabasePoolSize int64
	// PprofAddr serves net/http/pprof on this loopback address; empty: off.
	PprofAddr string

	JWTSecret   string
	JWTJWKSURL  string
	JWTIssuer   string
	JWTAudience string

	// Plans are the tiers' prices and limits, read from PLANS_FILE (the
	// built-in plans when it is unset). Zero, as a Config built in code
	// leaves it: the built-in plans.
	Plans    billing.Plans
	LogLevel slog.Level

	DedupWindow      time.Duration
	LateDataWindow   time.Duration
	MaxFutureSkew    time.Duration
	MaxConnectionAge time.Duration
	RawRetention     time.Duration

	// HTTP limits (0: the default of internal/http, documented in README).
	MaxInflight           int64         // requests handled at once before shedding
	MaxInflightPerUser    int64         // one caller's requests in flight; more: 429
	MaxInflightPerService int64         // the same for callers with the service role
	MaxConns              int64         // open client connections
	BodyTimeout           time.Duration // time for a request body to arrive; past it: 408
	ReadTimeout           time.Duration // bounds a read, its database statements included
	IdleTimeout           time.Duration // keep-alive connections idle this long are closed
	// IngestWriters is the number of concurrent group-commit flushes (0:
	// default, 2). Two let one flush's COPY overlap the next one's
	// preparation.
	IngestWriters int64
	// IngestMaxRollupLag is the rollup lag past which ingest flushes wait
	// (backpressure): ingest never starves the rollup worker.
	IngestMaxRollupLag time.Duration
	// HeavyReadSlots is how many reads heavier than HeavyReadThreshold
	// run at once, at most one per caller (0: GOMAXPROCS).
	HeavyReadSlots int64
	// HeavyReadThreshold is, in proxy-days (days × proxies), the heaviest
	// read that needs no slot (0: fairshare.DefaultThreshold).
	HeavyReadThreshold int64

	// WebhookAllowPrivate lets webhooks point at private, loopback and
	// link-local addresses. Off by default (SSRF); for tests and local
	// development only.
	WebhookAllowPrivate bool
	// AlertInterval is how often the leader evaluates alert thresholds
	// (default 10s, at most 60s: an alert is recorded within a minute).
	AlertInterval time.Duration
	// WebhookWorkers bounds deliveries in flight per replica (default 8).
	WebhookWorkers int64
	// Delivery tuning (zero: defaults 10s, 5s, 1h, 24h); tests shorten them.
	WebhookTimeout    time.Duration
	WebhookFirstRetry time.Duration
	WebhookMaxBackoff time.Duration
	WebhookRetryFor   time.Duration
}

// Defaults used when the environment does not say otherwise.
const (
	DefaultHTTPAddr         = ":8080"
	DefaultDataDir          = ".data"
	DefaultBackend          = "auto"
	DefaultDatabasePoolSize = 20
	DefaultDedupWindow      = 35 * 24 * time.Hour
	DefaultLateDataWindow   = 35 * 24 * time.Hour
	DefaultMaxFutureSkew    = 5 * time.Minute
	DefaultMaxConnectionAge = 24 * time.Hour
	DefaultRawRetention     = 400 * 24 * time.Hour
	DefaultAlertInterval    = 10 * time.Second
	DefaultMaxRollupLag     = 5 * time.Second
	DefaultReadFenceTimeout = 200 * time.Millisecond
	MaxReadFenceTimeout     = 5 * time.Second // half the default READ_TIMEOUT
	MaxAlertInterval        = time.Minute
)

// FromEnv reads the configuration from environment variables. All problems
// are reported together.
func FromEnv() (Config, error) {
	var errs []error
	dur := func(name string, def time.Duration) time.Duration {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		d, err := ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a positive duration (e.g. 35d, 24h)", name, v))
			return def
		}
		return d
	}
	c := Config{
		DatabaseURL:        os.Getenv("DATABASE_URL"),
		ReadDatabaseURL:    os.Getenv("READ_DATABASE_URL"),
		ReadFenceTimeout:   dur("READ_FENCE_TIMEOUT", DefaultReadFenceTimeout),
		DataDir:            cmp.Or(os.Getenv("DATA_DIR"), DefaultDataDir),
		HTTPAddr:           cmp.Or(os.Getenv("HTTP_ADDR"), DefaultHTTPAddr),
		Backend:            cmp.Or(os.Getenv("BACKEND"), DefaultBackend),
		DatabasePoolSize:   DefaultDatabasePoolSize,
		PprofAddr:          os.Getenv("PPROF_ADDR"),
		JWTSecret:          os.Getenv("JWT_SECRET"),
		JWTJWKSURL:         os.Getenv("JWT_JWKS_URL"),
		JWTIssuer:          os.Getenv("JWT_ISSUER"),
		JWTAudience:        os.Getenv("JWT_AUDIENCE"),
		DedupWindow:        dur("DEDUP_WINDOW", DefaultDedupWindow),
		LateDataWindow:     dur("LATE_DATA_WINDOW", DefaultLateDataWindow),
		MaxFutureSkew:      DefaultMaxFutureSkew,
		MaxConnectionAge:   dur("MAX_CONNECTION_AGE", DefaultMaxConnectionAge),
		RawRetention:       dur("RAW_RETENTION", DefaultRawRetention),
		AlertInterval:      dur("ALERT_INTERVAL", DefaultAlertInterval),
		IngestMaxRollupLag: dur("INGEST_MAX_ROLLUP_LAG", DefaultMaxRollupLag),
		BodyTimeout:        dur("BODY_TIMEOUT", 0),
		ReadTimeout:        dur("READ_TIMEOUT", 0),
		IdleTimeout:        dur("IDLE_TIMEOUT", 0),
	}
	plans, err := billing.LoadPlans(os.Getenv("PLANS_FILE"))
	if err != nil {
		errs = append(errs, err) // it names PLANS_FILE
	}
	c.Plans = plans
	switch v := os.Getenv("WEBHOOK_ALLOW_PRIVATE"); v {
	case "", "false", "0":
	case "true", "1":
		c.WebhookAllowPrivate = true
	default:
		errs = append(errs, fmt.Errorf("WEBHOOK_ALLOW_PRIVATE: %q is not true or false", v))
	}
	for name, dst := range map[string]*int64{
		"MAX_INFLIGHT": &c.MaxInflight, "INGEST_WRITERS": &c.IngestWriters, "WEBHOOK_WORKERS": &c.WebhookWorkers, "MAX_CONNS": &c.MaxConns,
		"MAX_INFLIGHT_PER_USER": &c.MaxInflightPerUser, "MAX_INFLIGHT_PER_SERVICE": &c.MaxInflightPerService,
		"DATABASE_POOL_SIZE": &c.DatabasePoolSize,
		"HEAVY_READ_SLOTS":   &c.HeavyReadSlots, "HEAVY_READ_THRESHOLD": &c.HeavyReadThreshold,
	} {
		if v := os.Getenv(name); v != "" {
			if _, err := fmt.Sscanf(v, "%d", dst); err != nil || *dst <= 0 {
				errs = append(errs, fmt.Errorf("%s: %q is not a positive integer", name, v))
			}
		}
	}
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", v))
		}
	}
	return c, errors.Join(errs...)
}

// Validate checks what must hold before the service can serve.
func (c Config) Validate() error {
	var errs []error
	if c.JWTSecret == "" && c.JWTJWKSURL == "" {
		errs = append(errs, errors.New("JWT_SECRET or JWT_JWKS_URL must be set"))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		errs = append(errs, errors.New("JWT_SECRET must be at least 32 bytes"))
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("HTTP_ADDR must not be empty"))
	}
	switch c.Backend {
	case "", "auto", "postgres", "timescaledb":
	default:
		errs = append(errs, fmt.Errorf("BACKEND: %q is not auto, postgres or timescaledb", c.Backend))
	}
	if c.DatabasePoolSize > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("DATABASE_POOL_SIZE must be at most %d", math.MaxInt32))
	}
	if c.DatabaseURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("DATABASE_URL or DATA_DIR must be set"))
	}
	// The raw events are the record a day's rollups are checked and
	// recomputed against: a day still open to late events keeps them.
	if c.RawRetention > 0 && c.RawRetention < c.LateDataWindow {
		errs = append(errs, fmt.Errorf("RAW_RETENTION (%s) must be at least LATE_DATA_WINDOW (%s): a day still open to late events keeps its raw events", c.RawRetention, c.LateDataWindow))
	}
	// A read waits this long before the primary answers it instead; longer
	// waits would only hold requests that the primary can serve now.
	if c.ReadFenceTimeout > MaxReadFenceTimeout {
		errs = append(errs, fmt.Errorf("READ_FENCE_TIMEOUT must be at most %s", MaxReadFenceTimeout))
	}
	if c.ReadTimeout > 0 && c.ReadFenceTimeout >= c.ReadTimeout {
		errs = append(errs, fmt.Errorf("READ_FENCE_TIMEOUT (%s) must be shorter than READ_TIMEOUT (%s): a read that gave up on its standby still needs time on the primary", c.ReadFenceTimeout, c.ReadTimeout))
	}
	if c.Plans.Tiers != nil {
		if err := c.Plans.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("PLANS_FILE: %w", err))
		}
	}
	if c.AlertInterval > MaxAlertInterval {
		errs = append(errs, fmt.Errorf("ALERT_INTERVAL must be at most %s (alerts are due within a minute)", MaxAlertInterval))
	}
	for _, v := range []struct {
		name  string
		value int64
	}{
		{"MAX_INFLIGHT", c.MaxInflight}, {"MAX_INFLIGHT_PER_USER", c.MaxInflightPerUser},
		{"MAX_INFLIGHT_PER_SERVICE", c.MaxInflightPerService}, {"MAX_CONNS", c.MaxConns}, {"INGEST_WRITERS", c.IngestWriters},
		{"DATABASE_POOL_SIZE", c.DatabasePoolSize},
		{"HEAVY_READ_SLOTS", c.HeavyReadSlots}, {"HEAVY_READ_THRESHOLD", c.HeavyReadThreshold},
		{"BODY_TIMEOUT", int64(c.BodyTimeout)}, {"READ_FENCE_TIMEOUT", int64(c.ReadFenceTimeout)}, {"READ_TIMEOUT", int64(c.ReadTimeout)}, {"IDLE_TIMEOUT", int64(c.IdleTimeout)},
	} {
		if v.value < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", v.name))
		}
	}
	return errors.Join(errs...)
}

// ParseDuration accepts Go durations plus a whole-day suffix ("35d").
func ParseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err != nil || fmt.Sprint(n) != d {
			return 0, fmt.Errorf("invalid day count %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
