// Package usage answers the read side of the API: daily and range metrics,
// summaries, reports and period aggregations (live and snapshotted). It
// decides who may read what; the numbers come from internal/rollup.
package usage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/fairshare"
	"proxyusage/internal/proxy"
	"proxyusage/internal/rollup"
	"proxyusage/internal/user"
)

// Service answers the usage reads the API serves. Each method checks who
// may ask before it validates the request.
type Service interface {
	Daily(ctx context.Context, caller auth.Principal, req DailyRequest) (Daily, error)
	Range(ctx context.Context, caller auth.Principal, req RangeRequest) (Range, error)
	Summary(ctx context.Context, caller auth.Principal, proxyID string) (Summary, error)
	Report(ctx context.Context, caller auth.Principal, req ReportRequest) (Report, error)
	Aggregation(ctx context.Context, caller auth.Principal, req AggregationRequest) (Aggregation, error)
	TierAggregation(ctx context.Context, caller auth.Principal, req AggregationRequest) (TierAggregation, error)
	Snapshot(ctx context.Context, caller auth.Principal, req SnapshotRequest) (Snapshot, error)
}

// Store is the Service, reading the rollups through rollup.Reader.
type Store struct {
	pool    *pgxpool.Pool
	reader  *rollup.Reader
	proxies *proxy.Store
	users   *user.Store
	gate    *fairshare.Gate
	now     func() time.Time
}

// Config configures a Store.
type Config struct {
	Pool    *pgxpool.Pool
	Reader  *rollup.Reader
	Proxies *proxy.Store
	Users   *user.Store
	// Gate admits the reads heavier than its threshold in days × proxies
	// fairly between callers; nil: every read at once.
	Gate *fairshare.Gate
	Now  func() time.Time // default time.Now
}

// NewStore returns a Store for cfg.
func NewStore(cfg Config) (*Store, error) {
	var errs []error
	if cfg.Pool == nil {
		errs = append(errs, errors.New("usage: Pool is required"))
	}
	if cfg.Reader == nil {
		errs = append(errs, errors.New("usage: Reader is required"))
	}
	if cfg.Proxies == nil {
		errs = append(errs, errors.New("usage: Proxies is required"))
	}
	if cfg.Users == nil {
		errs = append(errs, errors.New("usage: Users is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{pool: cfg.Pool, reader: cfg.Reader, proxies: cfg.Proxies, users: cfg.Users, gate: cfg.Gate, now: cfg.Now}, nil
}

var _ Service = (*Store)(nil)

// Daily is one proxy's metrics for one day.
type Daily struct {
	ProxyID string  `json:"proxyId"`
	Date    string  `json:"date"`
	Metrics Metrics `json:"metrics"`
}

// DayMetrics is a day's entry in a range.
type DayMetrics struct {
	Date string `json:"date"`
	Metrics
}

// Range is one proxy's metrics per day over a period, zero-filled.
type Range struct {
	ProxyID   string       `json:"proxyId"`
	StartDate string       `json:"startDate"`
	EndDate   string       `json:"endDate"`
	Metrics   []DayMetrics `json:"metrics"`
	Count     int          `json:"count"`
}

// Summary is one proxy's lifetime view.
type Summary struct {
	ProxyID         string     `json:"proxyId"`
	Totals          Metrics    `json:"totals"`
	OpenConnections int        `json:"openConnections"`
	FirstEventAt    *time.Time `json:"firstEventAt"`
	LastEventAt     *time.Time `json:"lastEventAt"`
}

// ReportRow is a row of a report: a day or a proxy.
type ReportRow struct {
	Date    string `json:"date,omitempty"`
	ProxyID string `json:"proxyId,omitempty"`
	Metrics
}

// Report is a user's usage over a period.
type Report struct {
	UserID    string      `json:"userId"`
	StartDate string      `json:"startDate"`
	EndDate   string      `json:"endDate"`
	GroupBy   string      `json:"groupBy"`
	Rows      []ReportRow `json:"rows"`
	Totals    Metrics     `json:"totals"`
}

// Aggregation is a user's period aggregation.
type Aggregation struct {
	UserID      string  `json:"userId"`
	Tier        string  `json:"tier"`
	PeriodStart string  `json:"periodStart"`
	PeriodEnd   string  `json:"periodEnd"`
	ProxyCount  int     `json:"proxyCount"`
	ActiveDays  int     `json:"activeDays"`
	Totals      Metrics `json:"totals"`
}

// TierRow is one tier's share of a cross-user aggregation.
type TierRow struct {
	Tier       string  `json:"tier"`
	UserCount  int     `json:"userCount"`
	ProxyCount int     `json:"proxyCount"`
	Totals     Metrics `json:"totals"`
}

// TierAggregation is the admin's per-tier aggregation over all users.
type TierAggregation struct {
	PeriodStart string    `json:"periodStart"`
	PeriodEnd   string    `json:"periodEnd"`
	GroupBy     string    `json:"groupBy"`
	Rows        []TierRow `json:"rows"`
}

// Snapshot is a stored aggregation.
type Snapshot struct {
	Aggregation Aggregation `json:"aggregation"`
	SnapshotAt  time.Time   `json:"snapshotAt"`
}

func date(t time.Time) string { return t.Format(DateLayout) }

// readable returns the proxy if caller may read it (owner or admin).
func (s *Store) readable(ctx context.Context, caller auth.Principal, proxyID string) (proxy.Proxy, error) {
	return s.proxies.Get(ctx, caller, proxyID)
}

// admit waits for a read's turn at the gate: its weight is the
// proxy-days it covers; the turn is the caller's (an admin reading many
// users takes one turn), not the user's it reads. The returned function
// ends the read.
func (s *Store) admit(ctx context.Context, caller auth.Principal, proxies int, period Period) (func(), error) {
	return s.gate.Acquire(ctx, caller.UserID, period.ProxyDays(proxies))
}

// Every request is checked in the same order: who may ask first (a caller
// learns nothing about data it may not read from the validation of its
// request), then the request's Validate.

// DailyRequest asks for one proxy's metrics on one day.
type DailyRequest struct {
	ProxyID string
	Date    time.Time // a UTC day
}

// Validate checks the day.
func (r *DailyRequest) Validate() error {
	if !isDay(r.Date) {
		return apperr.Errorf(apperr.Invalid, "date must be a date (YYYY-MM-DD)")
	}
	return nil
}

// Daily returns one proxy's metrics for one day.
func (s *Store) Daily(ctx context.Context, caller auth.Principal, req DailyRequest) (Daily, error) {
	p, err := s.readable(ctx, caller, req.ProxyID)
	if err != nil {
		return Daily{}, err
	}
	if err := req.Validate(); err != nil {
		return Daily{}, err
	}
	d := req.Date
	m, err := s.reader.Totals(ctx, []string{p.ID}, d, d, rollup.ByNone)
	if err != nil {
		return Daily{}, err
	}
	return Daily{ProxyID: p.ID, Date: date(d), Metrics: MetricsOf(m[rollup.Key{}])}, nil
}

// RangeRequest asks for one proxy's metrics per day over a period.
type RangeRequest struct {
	ProxyID string
	Period  Period
}

// Validate checks the period.
func (r *RangeRequest) Validate() error { return r.Period.Validate() }

// Range returns one proxy's metrics per day, zero-filled.
func (s *Store) Range(ctx context.Context, caller auth.Principal, req RangeRequest) (Range, error) {
	p, err := s.readable(ctx, caller, req.ProxyID)
	if err != nil {
		return Range{}, err
	}
	if err := req.Validate(); err != nil {
		return Range{}, err
	}
	period := req.Period
	done, err := s.admit(ctx, caller, 1, period)
	if err != nil {
		return Range{}, err
	}
	defer done()
	m, err := s.reader.Totals(ctx, []string{p.ID}, period.Start, period.End, rollup.ByDay)
	if err != nil {
		return Range{}, err
	}
	out := Range{ProxyID: p.ID, StartDate: date(period.Start), EndDate: date(period.End), Metrics: []DayMetrics{}}
	for d := period.Start; !d.After(period.End); d = d.AddDate(0, 0, 1) {
		out.Metrics = append(out.Metrics, DayMetrics{Date: date(d), Metrics: MetricsOf(m[rollup.Key{Day: d}])})
	}
	out.Count = len(out.Metrics)
	return out, nil
}

// lifetime bounds a proxy's whole history.
var (
	lifetimeStart = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	lifetimeEnd   = time.Date(9999, 12, 30, 0, 0, 0, 0, time.UTC)
)

// Summary returns one proxy's lifetime totals and open connections.
func (s *Store) Summary(ctx context.Context, caller auth.Principal, proxyID string) (Summary, error) {
	p, err := s.readable(ctx, caller, proxyID)
	if err != nil {
		return Summary{}, err
	}
	m, err := s.reader.Totals(ctx, []string{p.ID}, lifetimeStart, lifetimeEnd, rollup.ByNone)
	if err != nil {
		return Summary{}, err
	}
	open, err := s.reader.OpenConnections(ctx, p.ID, s.now())
	if err != nil {
		return Summary{}, err
	}
	t := m[rollup.Key{}]
	out := Summary{ProxyID: p.ID, Totals: MetricsOf(t), OpenConnections: open}
	if t != nil {
		out.FirstEventAt, out.LastEventAt = utc(t.FirstEventAt), utc(t.LastEventAt)
	}
	return out, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// GroupBy is how a report or an aggregation is broken down.
type GroupBy string

// The groupings: a report by day (the default) or by proxy; an
// aggregation of one user (no grouping) or of every user by tier.
const (
	GroupByDay   GroupBy = "day"
	GroupByProxy GroupBy = "proxy"
	GroupByTier  GroupBy = "tier"
)

// ReportRequest asks for a user's usage over a period.
type ReportRequest struct {
	UserID  string // "": the caller's own
	Period  Period
	GroupBy GroupBy // day (also ""), or proxy
}

// Validate checks the grouping and the period.
func (r *ReportRequest) Validate() error {
	switch r.GroupBy {
	case "", GroupByDay, GroupByProxy:
	default:
		return apperr.Errorf(apperr.Invalid, "groupBy must be day or proxy")
	}
	return r.Period.Validate()
}

// Report returns a user's usage grouped by day or by proxy.
func (s *Store) Report(ctx context.Context, caller auth.Principal, req ReportRequest) (Report, error) {
	uid, err := caller.Subject(req.UserID)
	if err != nil {
		return Report{}, err
	}
	if err := req.Validate(); err != nil {
		return Report{}, err
	}
	period, groupBy := req.Period, cmp.Or(req.GroupBy, GroupByDay)
	by := rollup.ByDay
	if groupBy == GroupByProxy {
		by = rollup.ByProxy
	}
	ids, err := s.proxies.IDs(ctx, uid)
	if err != nil {
		return Report{}, err
	}
	done, err := s.admit(ctx, caller, len(ids), period)
	if err != nil {
		return Report{}, err
	}
	defer done()
	m, err := s.reader.Totals(ctx, ids, period.Start, period.End, by)
	if err != nil {
		return Report{}, err
	}
	out := Report{UserID: uid, StartDate: date(period.Start), EndDate: date(period.End), GroupBy: string(groupBy), Rows: []ReportRow{}}
	var total rollup.Totals
	if by == rollup.ByDay {
		for d := period.Start; !d.After(period.End); d = d.AddDate(0, 0, 1) {
			t := m[rollup.Key{Day: d}]
			out.Rows = append(out.Rows, ReportRow{Date: date(d), Metrics: MetricsOf(t)})
			if t != nil {
				total.Merge(t)
			}
		}
	} else {
		// Rows list the proxies with events; the totals cover every proxy,
		// so a connection held open from before the period still counts in
		// the peak (as with groupBy=day).
		keys := make([]string, 0, len(m))
		for k, t := range m {
			if t.EventCount > 0 {
				keys = append(keys, k.ProxyID)
			}
			total.Merge(t)
		}
		sort.Strings(keys)
		for _, id := range keys {
			out.Rows = append(out.Rows, ReportRow{ProxyID: id, Metrics: MetricsOf(m[rollup.Key{ProxyID: id}])})
		}
	}
	out.Totals = MetricsOf(&total)
	return out, nil
}

// AggregationRequest asks for a period aggregation: of one user (GroupBy
// ""), answered by Aggregation, or of every user by tier (GroupByTier, no
// UserID), answered by TierAggregation.
type AggregationRequest struct {
	UserID  string // "": the caller's own
	Period  Period
	GroupBy GroupBy // "" or tier
}

// Validate checks the grouping, that a tier aggregation names no user,
// and the period.
func (r *AggregationRequest) Validate() error {
	switch r.GroupBy {
	case "":
	case GroupByTier:
		if r.UserID != "" {
			return apperr.Errorf(apperr.Invalid, "groupBy=tier covers all users; do not pass userId")
		}
	default:
		return apperr.Errorf(apperr.Invalid, "groupBy must be tier or absent")
	}
	return r.Period.Validate()
}

// Aggregation returns a user's live period aggregation.
func (s *Store) Aggregation(ctx context.Context, caller auth.Principal, req AggregationRequest) (Aggregation, error) {
	uid, err := caller.Subject(req.UserID)
	if err != nil {
		return Aggregation{}, err
	}
	if err := req.Validate(); err != nil {
		return Aggregation{}, err
	}
	if req.GroupBy == GroupByTier {
		return Aggregation{}, apperr.Errorf(apperr.Invalid, "groupBy=tier is answered by TierAggregation")
	}
	return s.aggregate(ctx, caller, uid, req.Period)
}

func (s *Store) aggregate(ctx context.Context, caller auth.Principal, uid string, period Period) (Aggregation, error) {
	ids, err := s.proxies.IDs(ctx, uid)
	if err != nil {
		return Aggregation{}, err
	}
	done, err := s.admit(ctx, caller, len(ids), period)
	if err != nil {
		return Aggregation{}, err
	}
	defer done()
	m, err := s.reader.Totals(ctx, ids, period.Start, period.End, rollup.ByProxyDay)
	if err != nil {
		return Aggregation{}, err
	}
	history, err := s.users.History(ctx, uid)
	if err != nil {
		return Aggregation{}, err
	}
	var total rollup.Totals
	proxies, days := map[string]bool{}, map[time.Time]bool{}
	for k, t := range m {
		if t.EventCount > 0 {
			proxies[k.ProxyID] = true
			days[k.Day] = true
		}
		total.Merge(t)
	}
	return Aggregation{
		UserID: uid, Tier: history.On(period.End),
		PeriodStart: date(period.Start), PeriodEnd: date(period.End),
		ProxyCount: len(proxies), ActiveDays: len(days), Totals: MetricsOf(&total),
	}, nil
}

// TierAggregation returns per-tier totals over all users (admin only); each
// user-day counts under the tier in effect that day.
func (s *Store) TierAggregation(ctx context.Context, caller auth.Principal, req AggregationRequest) (TierAggregation, error) {
	if !caller.IsAdmin() {
		return TierAggregation{}, apperr.Errorf(apperr.Forbidden, "groupBy=tier requires the admin role")
	}
	req.GroupBy = GroupByTier
	if err := req.Validate(); err != nil {
		return TierAggregation{}, err
	}
	period := req.Period
	owners, err := s.proxies.Owners(ctx)
	if err != nil {
		return TierAggregation{}, err
	}
	ids := make([]string, 0, len(owners))
	userSet := map[string]bool{}
	for id, uid := range owners {
		ids = append(ids, id)
		userSet[uid] = true
	}
	users := make([]string, 0, len(userSet))
	for u := range userSet {
		users = append(users, u)
	}
	done, err := s.admit(ctx, caller, len(ids), period)
	if err != nil {
		return TierAggregation{}, err
	}
	defer done()
	histories, err := s.users.Histories(ctx, users)
	if err != nil {
		return TierAggregation{}, err
	}
	m, err := s.reader.Totals(ctx, ids, period.Start, period.End, rollup.ByProxyDay)
	if err != nil {
		return TierAggregation{}, err
	}
	type acc struct {
		totals  rollup.Totals
		users   map[string]bool
		proxies map[string]bool
	}
	tiers := map[string]*acc{}
	for k, t := range m {
		if t.EventCount == 0 {
			continue
		}
		uid := owners[k.ProxyID]
		tier := histories[uid].On(k.Day)
		a, ok := tiers[tier]
		if !ok {
			a = &acc{users: map[string]bool{}, proxies: map[string]bool{}}
			tiers[tier] = a
		}
		a.totals.Merge(t)
		a.users[uid] = true
		a.proxies[k.ProxyID] = true
	}
	out := TierAggregation{PeriodStart: date(period.Start), PeriodEnd: date(period.End), GroupBy: string(GroupByTier), Rows: []TierRow{}}
	for _, tier := range []string{user.TierFree, user.TierPremium, user.TierEnterprise} {
		if a, ok := tiers[tier]; ok {
			out.Rows = append(out.Rows, TierRow{Tier: tier, UserCount: len(a.users), ProxyCount: len(a.proxies), Totals: MetricsOf(&a.totals)})
		}
	}
	return out, nil
}

// UserPeriod asks about one user's usage over a period: the request of a
// snapshot and of a bill.
type UserPeriod struct {
	UserID string // another user's (admins); "": the caller's own
	Period Period
}

// Validate checks the period; the user id is checked with the caller's
// right to it (auth.Principal.Subject).
func (r *UserPeriod) Validate() error { return r.Period.Validate() }

// SnapshotRequest asks to store a user's period aggregation.
type SnapshotRequest = UserPeriod

// MaxSnapshotBytes bounds a SnapshotRequest's JSON body.
const MaxSnapshotBytes = 64 << 10

// Snapshot computes the caller's period aggregation and upserts it into
// proxy_usage_aggregation, returning the stored row.
func (s *Store) Snapshot(ctx context.Context, caller auth.Principal, req SnapshotRequest) (Snapshot, error) {
	uid, err := caller.Subject(req.UserID)
	if err != nil {
		return Snapshot{}, err
	}
	if err := req.Validate(); err != nil {
		return Snapshot{}, err
	}
	period := req.Period
	agg, err := s.aggregate(ctx, caller, uid, period)
	if err != nil {
		return Snapshot{}, err
	}
	totals, err := json.Marshal(agg.Totals)
	if err != nil {
		return Snapshot{}, err
	}
	var stored Snapshot
	var storedTotals []byte
	var ps, pe time.Time
	err = s.pool.QueryRow(ctx, `
		INSERT INTO proxy_usage_aggregation (user_id, period_start, period_end, tier, proxy_count, active_days, totals, snapshot_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now())
		ON CONFLICT (user_id, period_start, period_end) DO UPDATE
		   SET tier = excluded.tier, proxy_count = excluded.proxy_count, active_days = excluded.active_days,
		       totals = excluded.totals, snapshot_at = excluded.snapshot_at
		RETURNING user_id, period_start, period_end, tier, proxy_count, active_days, totals, snapshot_at`,
		uid, period.Start, period.End, agg.Tier, agg.ProxyCount, agg.ActiveDays, totals).Scan(
		&stored.Aggregation.UserID, &ps, &pe, &stored.Aggregation.Tier, &stored.Aggregation.ProxyCount,
		&stored.Aggregation.ActiveDays, &storedTotals, &stored.SnapshotAt)
	if database.IsForeignKeyViolation(err) {
		// Only an admin can name a user that has no row (a caller's own is
		// created when it authenticates): the reference decides, atomically.
		return Snapshot{}, apperr.Errorf(apperr.NotFound, "user not found")
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("store snapshot: %w", err)
	}
	stored.Aggregation.PeriodStart, stored.Aggregation.PeriodEnd = date(ps.UTC()), date(pe.UTC())
	if err := json.Unmarshal(storedTotals, &stored.Aggregation.Totals); err != nil {
		return Snapshot{}, fmt.Errorf("decode snapshot: %w", err)
	}
	stored.SnapshotAt = stored.SnapshotAt.UTC()
	return stored, nil
}
