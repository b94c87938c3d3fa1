// Package alert records usage threshold alerts and delivers them to the
// users' webhooks.
//
// An alert is recorded in usage_alerts (unique per user, month and
// threshold) by the Evaluator, which one replica at a time runs, before
// anything is sent: the table is an outbox. Deliverers on every replica
// claim due alerts with a lease and POST them, signed with the user's
// secret, retrying with exponential backoff; a crash between recording and
// delivering only delays the webhook until the lease runs out.
package alert

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
)

// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
// "<t>.<raw body>")>" on every delivery.
const SignatureHeader = "X-ProxyUsage-Signature"

// EventType is the type of a threshold alert's payload.
const EventType = "usage.threshold_reached"

// Sign returns the signature header value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookService manages the callers' webhook endpoints and reads their
// delivery logs.
type WebhookService interface {
	Set(ctx context.Context, caller auth.Principal, in WebhookInput) (Webhook, error)
	Get(ctx context.Context, caller auth.Principal) (Webhook, error)
	Delete(ctx context.Context, caller auth.Principal) error
	Deliveries(ctx context.Context, caller auth.Principal, req DeliveriesRequest) ([]Delivery, error)
}

// Webhooks is the WebhookService on PostgreSQL.
type Webhooks struct {
	pool  *pgxpool.Pool
	guard Guard
	now   func() time.Time
}

// NewWebhooks returns a Webhooks on pool; guard checks URLs.
func NewWebhooks(pool *pgxpool.Pool, guard Guard) *Webhooks {
	return &Webhooks{pool: pool, guard: guard, now: time.Now}
}

var _ WebhookService = (*Webhooks)(nil)

// MaxWebhookBytes bounds a WebhookInput's JSON body.
const MaxWebhookBytes = 16 << 10

// WebhookInput is the body of PUT /proxy/usage/webhook.
type WebhookInput struct {
	URL string `json:"url"`
}

// Validate checks what can be checked without the network; Set checks the
// rest (the address the host resolves to).
func (in *WebhookInput) Validate() error {
	if in.URL == "" || len(in.URL) > MaxURLLength {
		return apperr.Errorf(apperr.Invalid, "url must be an http or https URL of at most %d characters", MaxURLLength)
	}
	return nil
}

// Webhook is a user's endpoint as served; Secret only in the answer to
// the PUT that created it.
type Webhook struct {
	URL       string    `json:"url"`
	Secret    string    `json:"secret,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "whsec_" + hex.EncodeToString(b[:]), nil
}

// Set points the caller's alerts at in.URL with a fresh signing secret,
// which only this answer shows.
func (s *Webhooks) Set(ctx context.Context, caller auth.Principal, in WebhookInput) (Webhook, error) {
	u, err := s.guard.CheckURL(ctx, in.URL)
	if err != nil {
		return Webhook{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return Webhook{}, err
	}
	w := Webhook{URL: u.String(), Secret: secret}
	err = s.pool.QueryRow(ctx, `
		INSERT INTO user_webhooks (user_id, url, secret) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, updated_at = now()
		RETURNING updated_at`, caller.UserID, w.URL, secret).Scan(&w.UpdatedAt)
	if err != nil {
		return Webhook{}, fmt.Errorf("set webhook: %w", err)
	}
	w.UpdatedAt = w.UpdatedAt.UTC()
	return w, nil
}

// Get returns the caller's webhook without its secret; 404 when none.
func (s *Webhooks) Get(ctx context.Context, caller auth.Principal) (Webhook, error) {
	var w Webhook
	err := s.pool.QueryRow(ctx, `SELECT url, updated_at FROM user_webhooks WHERE user_id = $1`, caller.UserID).Scan(&w.URL, &w.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Webhook{}, apperr.Errorf(apperr.NotFound, "no webhook is configured")
	}
	if err != nil {
		return Webhook{}, fmt.Errorf("get webhook: %w", err)
	}
	w.UpdatedAt = w.UpdatedAt.UTC()
	return w, nil
}

// Delete removes the caller's webhook (no error when there is none).
// Alerts not yet delivered are then not delivered.
func (s *Webhooks) Delete(ctx context.Context, caller auth.Principal) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM user_webhooks WHERE user_id = $1`, caller.UserID); err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	return nil
}

// Delivery is one attempt to deliver an alert.
type Delivery struct {
	AlertID          string    `json:"alertId"`
	Attempt          int       `json:"attempt"`
	Status           *int      `json:"status"` // the HTTP status answered; null when none came
	Result           string    `json:"result"` // delivered, http_error, timeout, network_error, refused
	At               time.Time `json:"at"`
	Month            string    `json:"month"`
	ThresholdPercent int       `json:"thresholdPercent"`
}

// Delivery results.
const (
	ResultDelivered = "delivered"
	ResultHTTPError = "http_error"
	ResultTimeout   = "timeout"
	ResultNetwork   = "network_error"
	ResultRefused   = "refused" // the address was private (SSRF guard)
)

// The delivery log's page size: the default and the largest.
const (
	DefaultDeliveries = 100
	MaxDeliveries     = 1000
)

// DeliveriesRequest asks for the latest delivery attempts of a user's
// alerts.
type DeliveriesRequest struct {
	UserID string // empty: the caller's own
	Limit  int    // 1 to MaxDeliveries; the transport starts from DefaultDeliveries
}

// Validate checks the page size.
func (r DeliveriesRequest) Validate() error {
	if r.Limit < 1 || r.Limit > MaxDeliveries {
		return apperr.Errorf(apperr.Invalid, "limit must be an integer from 1 to %d", MaxDeliveries)
	}
	return nil
}

// Deliveries lists the latest delivery attempts of a user's alerts, newest
// first: the caller's own, or for an admin any user's.
func (s *Webhooks) Deliveries(ctx context.Context, caller auth.Principal, req DeliveriesRequest) ([]Delivery, error) {
	uid, err := caller.Subject(req.UserID)
	if err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	limit := req.Limit
	rows, err := s.pool.Query(ctx, `
		SELECT d.alert_id::text, d.attempt, d.http_status, d.result, d.at, a.month, a.threshold_percent
		  FROM webhook_deliveries d JOIN usage_alerts a ON a.id = d.alert_id
		 WHERE d.user_id = $1 ORDER BY d.id DESC LIMIT $2`, uid, limit)
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	out := []Delivery{}
	var d Delivery
	var month time.Time
	_, err = pgx.ForEachRow(rows, []any{&d.AlertID, &d.Attempt, &d.Status, &d.Result, &d.At, &month, &d.ThresholdPercent}, func() error {
		d.At, d.Month = d.At.UTC(), month.Format("2006-01")
		out = append(out, d)
		d.Status = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	return out, nil
}
