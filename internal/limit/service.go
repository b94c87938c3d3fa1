package limit

import (
	"context"
	"errors"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/exact"
	"proxyusage/internal/proxy"
	"proxyusage/internal/rollup"
)

// BytesReader supplies the SQL that sums totalBytes exactly: the rollup
// reader's, over the same rollups and pending days that reports and bills
// read, so limits agree with both (rollup.Reader.BytesCTEs).
type BytesReader interface {
	BytesCTEs() string
}

// Config configures a Store.
type Config struct {
	Pool   *pgxpool.Pool
	Reader BytesReader
	// PlanLimit returns the limit a tier's plan carries, nil for none.
	PlanLimit func(tier string) *Limit
	Now       func() time.Time
}

// Service answers the limit questions the API serves.
type Service interface {
	Status(ctx context.Context, caller auth.Principal, userID string) (Status, error)
	Access(ctx context.Context, caller auth.Principal, proxyID string) (Access, error)
}

// Store is the Service on PostgreSQL; the alert evaluator also uses its
// lower-level reads (Subjects, Effective, Used).
type Store struct {
	pool      *pgxpool.Pool
	reader    BytesReader
	planLimit func(string) *Limit
	now       func() time.Time
}

// NewStore returns a Store for cfg.
func NewStore(cfg Config) (*Store, error) {
	if cfg.Pool == nil || cfg.Reader == nil {
		return nil, errors.New("limit: Pool and Reader are required")
	}
	if cfg.PlanLimit == nil {
		cfg.PlanLimit = func(string) *Limit { return nil }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{pool: cfg.Pool, reader: cfg.Reader, planLimit: cfg.PlanLimit, now: cfg.Now}, nil
}

var _ Service = (*Store)(nil)

// Subject is what a limit decision needs about one user.
type Subject struct {
	UserID  string
	Tier    string // in effect today
	Own     *Limit // set by an admin; overrides the plan's
	Proxies []string
}

// subjectColumns reads a Subject for the user u in one round trip; $1 is
// today.
const subjectColumns = `
SELECT u.id,
       coalesce((SELECT t.tier FROM user_tiers t WHERE t.user_id = u.id AND t.effective_from <= $1
                  ORDER BY t.effective_from DESC LIMIT 1), 'free') AS tier,
       l.monthly_gb, l.enforcement, l.alert_percents,
       coalesce((SELECT array_agg(p.id ORDER BY p.id) FROM proxies p WHERE p.user_id = u.id), '{}') AS proxy_ids`

func scanSubject(row pgx.Row, extra ...any) (Subject, error) {
	var s Subject
	var gb decimal.NullDecimal
	var enforcement *string
	var percents []int32
	err := row.Scan(append([]any{&s.UserID, &s.Tier, &gb, &enforcement, &percents, &s.Proxies}, extra...)...)
	if err != nil {
		return Subject{}, err
	}
	if gb.Valid && enforcement != nil {
		s.Own = &Limit{MonthlyGB: gb.Decimal, Enforcement: *enforcement, AlertPercents: make([]int, len(percents))}
		for i, p := range percents {
			s.Own.AlertPercents[i] = int(p)
		}
	}
	return s, nil
}

// Effective is the limit s is held to: its own, else its plan's (nil for
// none). Source says which ("user", "plan" or "").
func (s *Store) Effective(sub Subject) (l *Limit, source string) {
	if sub.Own != nil {
		return sub.Own, "user"
	}
	if l := s.planLimit(sub.Tier); l != nil {
		return l, "plan"
	}
	return nil, ""
}

// Today is the current UTC day.
func (s *Store) Today() time.Time { return rollup.Day(s.now()) }

// subject reads one user's Subject; NotFound when the user does not exist.
func (s *Store) subject(ctx context.Context, userID string) (Subject, error) {
	sub, err := scanSubject(database.Reads(s.pool).QueryRow(ctx, subjectColumns+`
  FROM users u LEFT JOIN user_limits l ON l.user_id = u.id
 WHERE u.id = $2`, s.Today(), userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Subject{}, apperr.Errorf(apperr.NotFound, "user not found")
	}
	if err != nil {
		return Subject{}, errorf("read user: %w", err)
	}
	return sub, nil
}

// Subjects returns every user held to a limit today: those with their own
// and those whose plan carries one (limitedTiers).
func (s *Store) Subjects(ctx context.Context, limitedTiers []string) ([]Subject, error) {
	rows, err := s.pool.Query(ctx, `
WITH c AS (`+subjectColumns+`
  FROM users u LEFT JOIN user_limits l ON l.user_id = u.id)
SELECT * FROM c WHERE monthly_gb IS NOT NULL OR c.tier = ANY($2)`, s.Today(), limitedTiers)
	if err != nil {
		return nil, errorf("read limited users: %w", err)
	}
	defer rows.Close()
	var out []Subject
	for rows.Next() {
		sub, err := scanSubject(rows)
		if err != nil {
			return nil, errorf("read limited users: %w", err)
		}
		out = append(out, sub)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("read limited users: %w", err)
	}
	return out, nil
}

// Used returns the bytes the subject's proxies (archived ones included)
// carried in the month starting at month, exactly, counting every
// acknowledged event.
func (s *Store) Used(ctx context.Context, sub Subject, month time.Time) (*big.Int, error) {
	var used exact.Sum
	err := database.Reads(s.pool).QueryRow(ctx, UsedSQL(s.reader.BytesCTEs()), sub.Proxies, month, MonthEnd(month)).Scan(&used)
	if err != nil {
		return nil, errorf("read usage: %w", err)
	}
	return used.BigInt(), nil
}

// UsedSQL is Used's statement given the rollup reader's BytesCTEs: $1
// proxies, $2 and $3 the first and last day.
func UsedSQL(ctes string) string {
	return `
WITH bytes_scope AS (SELECT $1::text[] AS proxy_ids, $2::date AS first_day, $3::date AS last_day),` + ctes + `
SELECT bytes::text FROM exact_bytes`
}

// Status is a user's limit and the current month's usage.
type Status struct {
	UserID        string  `json:"userId"`
	Month         string  `json:"month"`
	LimitGB       *string `json:"limitGB"`
	Enforcement   *string `json:"enforcement"`
	Source        *string `json:"source"` // "user" or "plan"; null without a limit
	AlertPercents []int   `json:"alertPercents"`
	UsedGB        string  `json:"usedGB"`
	RemainingGB   *string `json:"remainingGB"`
	Exceeded      bool    `json:"exceeded"`
	ResetsAt      string  `json:"resetsAt"`
}

// Status answers GET /proxy/usage/limits: the caller's own, or for an
// admin any user's.
func (s *Store) Status(ctx context.Context, caller auth.Principal, userID string) (Status, error) {
	uid, err := caller.Subject(userID)
	if err != nil {
		return Status{}, err
	}
	sub, err := s.subject(ctx, uid)
	if err != nil {
		return Status{}, err
	}
	month := Month(s.now())
	used, err := s.Used(ctx, sub, month)
	if err != nil {
		return Status{}, err
	}
	st := Status{UserID: uid, Month: monthString(month), UsedGB: UsedString(used), AlertPercents: []int{},
		ResetsAt: month.AddDate(0, 1, 0).Format(time.RFC3339)}
	if l, source := s.Effective(sub); l != nil {
		limitGB, remaining := l.MonthlyGB.String(), decimal.Max(l.MonthlyGB.Sub(GB(used)), decimal.Zero).StringFixed(MaxGBDecimals)
		st.LimitGB, st.Enforcement, st.Source, st.RemainingGB = &limitGB, &l.Enforcement, &source, &remaining
		st.AlertPercents = l.AlertPercents
		st.Exceeded = l.Reached(used, 100)
	}
	return st, nil
}

// Access reasons.
const (
	ReasonOK       = "ok"
	ReasonExceeded = "limit_exceeded"
	ReasonArchived = "archived"
)

// Access is the edge's answer: may this proxy open a new connection now?
type Access struct {
	ProxyID     string  `json:"proxyId"`
	UserID      string  `json:"userId"`
	Allowed     bool    `json:"allowed"`
	Reason      string  `json:"reason"`
	UsedGB      string  `json:"usedGB"`
	LimitGB     *string `json:"limitGB"`
	Enforcement *string `json:"enforcement"`
	Month       string  `json:"month"`
}

// Access answers GET /proxy/usage/access/{proxyId} for the service role,
// admins and the proxy's owner; anyone else gets 404, as for a proxy that
// does not exist. A hard limit reached (used ≥ limit) or an archived proxy
// refuses; a soft limit never does.
func (s *Store) Access(ctx context.Context, caller auth.Principal, proxyID string) (Access, error) {
	notFound := apperr.Errorf(apperr.NotFound, "proxy not found")
	if proxy.ValidateID(proxyID) != nil {
		return Access{}, notFound
	}
	// The edge asks before every new connection: the owner, their limit
	// and the month's exact usage in one statement, one round trip.
	month := Month(s.now())
	var archived bool
	var usedSum exact.Sum
	sub, err := scanSubject(database.Reads(s.pool).QueryRow(ctx, `
WITH owner AS (`+subjectColumns+`, x.archived_at IS NOT NULL AS archived
  FROM proxies x JOIN users u ON u.id = x.user_id LEFT JOIN user_limits l ON l.user_id = u.id
 WHERE x.id = $2
), bytes_scope AS (SELECT proxy_ids, $3::date AS first_day, $4::date AS last_day FROM owner),`+s.reader.BytesCTEs()+`
SELECT owner.*, exact_bytes.bytes::text FROM owner, exact_bytes`, s.Today(), proxyID, month, MonthEnd(month)), &archived, &usedSum)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !caller.CanWrite(sub.UserID)) {
		return Access{}, notFound
	}
	if err != nil {
		return Access{}, errorf("read proxy: %w", err)
	}
	used := usedSum.BigInt()
	a := Access{ProxyID: proxyID, UserID: sub.UserID, Allowed: true, Reason: ReasonOK, UsedGB: UsedString(used), Month: monthString(month)}
	l, _ := s.Effective(sub)
	if l != nil {
		limitGB := l.MonthlyGB.String()
		a.LimitGB, a.Enforcement = &limitGB, &l.Enforcement
	}
	switch {
	case archived:
		a.Allowed, a.Reason = false, ReasonArchived
	case l != nil && l.Enforcement == Hard && l.Reached(used, 100):
		a.Allowed, a.Reason = false, ReasonExceeded
	}
	return a, nil
}

// Set stores a user's own limit (nil removes it) inside tx, the caller's
// transaction (the admin account update).
func Set(ctx context.Context, tx pgx.Tx, userID string, l *Limit) error {
	if l == nil {
		_, err := tx.Exec(ctx, `DELETE FROM user_limits WHERE user_id = $1`, userID)
		return err
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO user_limits (user_id, monthly_gb, enforcement, alert_percents) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET monthly_gb = excluded.monthly_gb, enforcement = excluded.enforcement,
		       alert_percents = excluded.alert_percents, updated_at = now()`,
		userID, l.MonthlyGB, l.Enforcement, l.AlertPercents)
	return err
}

// Querier runs a query: a pool or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Own returns a user's own limit, nil for none.
func Own(ctx context.Context, q Querier, userID string) (*Limit, error) {
	var gb decimal.Decimal
	var l Limit
	var percents []int32
	err := q.QueryRow(ctx, `SELECT monthly_gb, enforcement, alert_percents FROM user_limits WHERE user_id = $1`, userID).
		Scan(&gb, &l.Enforcement, &percents)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, errorf("read limit: %w", err)
	}
	l.MonthlyGB = gb
	for _, p := range percents {
		l.AlertPercents = append(l.AlertPercents, int(p))
	}
	if l.AlertPercents == nil {
		l.AlertPercents = []int{}
	}
	return &l, nil
}
