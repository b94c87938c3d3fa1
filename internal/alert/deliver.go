package alert

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"proxyusage/internal/limit"
	"proxyusage/internal/telemetry"
)

// DelivererConfig configures a Deliverer.
type DelivererConfig struct {
	Pool    *pgxpool.Pool
	Metrics *telemetry.Metrics
	Logger  *slog.Logger
	Guard   Guard

	Workers        int           // deliveries in flight at once (default 8)
	PollInterval   time.Duration // between looks for due alerts when idle (default 1s)
	AttemptTimeout time.Duration // per attempt: no answer in it is a failure (default 10s)
	FirstRetry     time.Duration // wait before the first retry, doubling after (default 5s)
	MaxBackoff     time.Duration // longest wait between attempts (default 1h)
	RetryFor       time.Duration // give up this long after the alert was recorded (default 24h)
}

func (c *DelivererConfig) validate() error {
	var errs []error
	if c.Pool == nil || c.Metrics == nil || c.Logger == nil {
		errs = append(errs, errors.New("alert: deliverer needs Pool, Metrics and Logger"))
	}
	for name, d := range map[string]time.Duration{"PollInterval": c.PollInterval, "AttemptTimeout": c.AttemptTimeout,
		"FirstRetry": c.FirstRetry, "MaxBackoff": c.MaxBackoff, "RetryFor": c.RetryFor} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("alert: %s must not be negative", name))
		}
	}
	if c.Workers < 0 {
		errs = append(errs, errors.New("alert: Workers must not be negative"))
	}
	return errors.Join(errs...)
}

// Deliverer POSTs recorded alerts to their users' webhooks: at least once,
// with a stable id, from every replica (claims are row locks with a lease,
// so two replicas never send the same attempt).
type Deliverer struct {
	cfg    DelivererConfig
	log    *slog.Logger
	client *http.Client
	wake   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
}

// NewDeliverer validates cfg and applies defaults.
func NewDeliverer(cfg DelivererConfig) (*Deliverer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Workers = cmp.Or(cfg.Workers, 8)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, time.Second)
	cfg.AttemptTimeout = cmp.Or(cfg.AttemptTimeout, 10*time.Second)
	cfg.FirstRetry = cmp.Or(cfg.FirstRetry, 5*time.Second)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, time.Hour)
	cfg.RetryFor = cmp.Or(cfg.RetryFor, 24*time.Hour)
	dialer := &net.Dialer{Timeout: cfg.AttemptTimeout, Control: cfg.Guard.control}
	transport := &http.Transport{
		Proxy:                 nil, // never through an environment proxy: the guard must see the real address
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   cfg.AttemptTimeout,
		ResponseHeaderTimeout: cfg.AttemptTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}
	client := &http.Client{
		Transport: transport,
		Timeout:   cfg.AttemptTimeout,
		// A redirect is an answer that is not 2xx: retried, never followed
		// (it could point anywhere).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Deliverer{cfg: cfg, log: cfg.Logger.With(slog.String("component", "alert.deliverer")),
		client: client, wake: make(chan struct{}, 1)}, nil
}

// Wake asks the loop to look for due alerts now (a new alert was
// recorded in this process).
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Start runs the delivery loop until Stop.
func (d *Deliverer) Start(ctx context.Context) {
	ctx, d.stop = context.WithCancel(ctx)
	d.done = make(chan struct{})
	go func() {
		defer close(d.done)
		d.loop(ctx)
	}()
}

// Stop ends the loop and waits for attempts in flight; an attempt cut
// short records nothing, and its alert is retried when its lease ends,
// here or on another replica.
func (d *Deliverer) Stop() {
	if d.stop == nil {
		return
	}
	d.stop()
	<-d.done
	d.client.CloseIdleConnections()
}

func (d *Deliverer) loop(ctx context.Context) {
	slots := make(chan struct{}, d.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-d.wake:
		}
		free := d.cfg.Workers - len(slots)
		claimed := 0
		if free > 0 {
			jobs, err := d.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				d.log.Error("claim alerts", slog.Any("error", err))
			}
			claimed = len(jobs)
			for _, j := range jobs {
				slots <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-slots; wg.Done(); d.Wake() }()
					d.deliver(ctx, j)
				}()
			}
		}
		next := d.cfg.PollInterval
		if claimed == free && free > 0 {
			next = 0 // maybe more are due
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// job is a claimed alert.
type job struct {
	id, userID  string
	month       time.Time
	threshold   int
	limitGB     decimal.Decimal
	usedBytes   decimal.Decimal
	createdAt   time.Time
	attempt     int
	url, secret *string
}

// claim takes up to n due alerts, leasing each for longer than one attempt
// can take (the client gives up after AttemptTimeout), so another replica
// only retries one whose deliverer died.
func (d *Deliverer) claim(ctx context.Context, n int) ([]job, error) {
	lease := 3 * d.cfg.AttemptTimeout
	rows, err := d.cfg.Pool.Query(ctx, `
		UPDATE usage_alerts a
		   SET attempts = a.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
		 WHERE a.id IN (SELECT id FROM usage_alerts WHERE state = 'pending' AND next_attempt_at <= now()
		                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING a.id::text, a.user_id, a.month, a.threshold_percent, a.limit_gb, a.used_bytes, a.created_at, a.attempts,
		          (SELECT w.url FROM user_webhooks w WHERE w.user_id = a.user_id),
		          (SELECT w.secret FROM user_webhooks w WHERE w.user_id = a.user_id)`, n, lease.Seconds())
	if err != nil {
		return nil, err
	}
	var out []job
	var j job
	_, err = pgx.ForEachRow(rows, []any{&j.id, &j.userID, &j.month, &j.threshold, &j.limitGB, &j.usedBytes, &j.createdAt, &j.attempt, &j.url, &j.secret}, func() error {
		out = append(out, j)
		j.url, j.secret = nil, nil
		return nil
	})
	return out, err
}

// Payload is the body of a threshold alert delivery.
type Payload struct {
	ID               string    `json:"id"`
	Type             string    `json:"type"`
	UserID           string    `json:"userId"`
	Month            string    `json:"month"`
	ThresholdPercent int       `json:"thresholdPercent"`
	LimitGB          string    `json:"limitGB"`
	UsedGB           string    `json:"usedGB"`
	CreatedAt        time.Time `json:"createdAt"`
}

func (j job) payload() ([]byte, error) {
	used, _ := new(big.Int).SetString(j.usedBytes.Truncate(0).String(), 10)
	if used == nil {
		used = new(big.Int)
	}
	return json.Marshal(Payload{
		ID: j.id, Type: EventType, UserID: j.userID, Month: limit.MonthString(j.month), ThresholdPercent: j.threshold,
		LimitGB: j.limitGB.String(), UsedGB: limit.UsedString(used), CreatedAt: j.createdAt.UTC(),
	})
}

// deliver makes one attempt and records its outcome.
func (d *Deliverer) deliver(ctx context.Context, j job) {
	log := d.log.With(slog.String("alert", j.id), slog.Int("attempt", j.attempt))
	if j.url == nil {
		// The webhook was removed after the alert was recorded.
		d.finish(ctx, j, "no_webhook", nil, "")
		return
	}
	status, result := d.post(ctx, j)
	if ctx.Err() != nil {
		return // shutting down: the lease hands the alert to the next try
	}
	d.cfg.Metrics.WebhookDeliveries.WithLabelValues(result).Inc()
	if result == ResultDelivered {
		d.cfg.Metrics.AlertDeliveryTime.Observe(time.Since(j.createdAt).Seconds())
		d.finish(ctx, j, "delivered", status, result)
		return
	}
	log.Warn("webhook delivery failed", slog.String("result", result), slog.Any("status", status))
	if time.Since(j.createdAt) >= d.cfg.RetryFor {
		d.cfg.Metrics.AlertsAbandoned.Inc()
		log.Error("webhook delivery abandoned after the retry window", slog.Duration("retryFor", d.cfg.RetryFor))
		d.finish(ctx, j, "failed", status, result)
		return
	}
	d.finish(ctx, j, "pending", status, result)
}

// post sends the signed payload and classifies the outcome.
func (d *Deliverer) post(ctx context.Context, j job) (*int, string) {
	body, err := j.payload()
	if err != nil {
		return nil, ResultNetwork
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *j.url, bytes.NewReader(body))
	if err != nil {
		return nil, ResultNetwork
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "proxyusage-webhooks/1")
	req.Header.Set("X-ProxyUsage-Event", EventType)
	req.Header.Set("X-ProxyUsage-Delivery", j.id)
	req.Header.Set(SignatureHeader, Sign(*j.secret, time.Now(), body))
	resp, err := d.client.Do(req)
	switch {
	case errors.Is(err, ErrPrivateAddress):
		return nil, ResultRefused
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)):
		return nil, ResultTimeout
	case err != nil:
		return nil, ResultNetwork
	}
	// Drain a little so the connection can be reused; the body is not read.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	status := resp.StatusCode
	if status >= 200 && status < 300 {
		return &status, ResultDelivered
	}
	return &status, ResultHTTPError
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// backoff is the wait after the attempt-th failed attempt: FirstRetry,
// doubling, at most MaxBackoff.
func (d *Deliverer) backoff(attempt int) time.Duration {
	wait := d.cfg.FirstRetry
	for i := 1; i < attempt && wait < d.cfg.MaxBackoff; i++ {
		wait *= 2
	}
	return min(wait, d.cfg.MaxBackoff)
}

// finish logs the attempt (when one was made) and moves the alert to state,
// scheduling the next attempt when it stays pending.
func (d *Deliverer) finish(ctx context.Context, j job, state string, status *int, result string) {
	err := pgx.BeginFunc(ctx, d.cfg.Pool, func(tx pgx.Tx) error {
		if result != "" {
			if _, err := tx.Exec(ctx, `
				INSERT INTO webhook_deliveries (alert_id, user_id, attempt, http_status, result) VALUES ($1, $2, $3, $4, $5)`,
				j.id, j.userID, j.attempt, status, result); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `
			UPDATE usage_alerts SET state = $2,
			       next_attempt_at = CASE WHEN $2 = 'pending' THEN now() + make_interval(secs => $3) ELSE next_attempt_at END,
			       finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
			 WHERE id = $1`, j.id, state, d.backoff(j.attempt).Seconds())
		return err
	})
	if err != nil && ctx.Err() == nil {
		d.log.Error("record delivery", slog.String("alert", j.id), slog.Any("error", err))
	}
}
