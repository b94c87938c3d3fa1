package billing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/database"
	"proxyusage/internal/fairshare"
	"proxyusage/internal/limit"
	"proxyusage/internal/proxy"
	"proxyusage/internal/rollup"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
)

// Service computes bills and manages accounts (tier history, contracts).
type Service interface {
	Bill(ctx context.Context, caller auth.Principal, req BillRequest) (Bill, error)
	GetAccount(ctx context.Context, caller auth.Principal, userID string) (Account, error)
	UpdateAccount(ctx context.Context, caller auth.Principal, req AccountUpdate) (Account, error)
}

// Store is the Service on PostgreSQL and the plans.
type Store struct {
	pool    *pgxpool.Pool
	plans   Plans
	reader  *rollup.Reader
	proxies *proxy.Store
	users   *user.Store
	gate    *fairshare.Gate
	now     func() time.Time
}

// Config configures a Store.
type Config struct {
	Pool    *pgxpool.Pool
	Plans   Plans
	Reader  *rollup.Reader
	Proxies *proxy.Store
	Users   *user.Store
	// Gate admits heavy reads fairly between callers (see usage.Config); nil:
	// every read at once.
	Gate *fairshare.Gate
	Now  func() time.Time
}

// NewStore returns a Store for cfg.
func NewStore(cfg Config) (*Store, error) {
	var errs []error
	if cfg.Pool == nil || cfg.Reader == nil || cfg.Proxies == nil || cfg.Users == nil {
		errs = append(errs, errors.New("billing: Pool, Reader, Proxies and Users are required"))
	}
	if err := cfg.Plans.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{pool: cfg.Pool, plans: cfg.Plans, reader: cfg.Reader, proxies: cfg.Proxies, users: cfg.Users, gate: cfg.Gate, now: cfg.Now}, nil
}

var _ Service = (*Store)(nil)

// BillRequest asks for a user's bill over a period.
type BillRequest = usage.UserPeriod

// Bill computes the billing summary of a user for a period. Usage comes
// from the same rollups as the reports, so bill and report agree.
func (s *Store) Bill(ctx context.Context, caller auth.Principal, req BillRequest) (Bill, error) {
	uid, err := caller.Subject(req.UserID)
	if err != nil {
		return Bill{}, err
	}
	if err := req.Validate(); err != nil {
		return Bill{}, err
	}
	period := req.Period
	ids, err := s.proxies.IDs(ctx, uid)
	if err != nil {
		return Bill{}, err
	}
	done, err := s.gate.Acquire(ctx, caller.UserID, period.ProxyDays(len(ids)))
	if err != nil {
		return Bill{}, err
	}
	defer done()
	daily, err := s.reader.DailyBytes(ctx, ids, period.Start, period.End)
	if err != nil {
		return Bill{}, err
	}
	history, err := s.users.History(ctx, uid)
	if err != nil {
		return Bill{}, err
	}
	contracts, err := s.contracts(ctx, uid)
	if err != nil {
		return Bill{}, err
	}
	return Compute(s.plans, Input{UserID: uid, Start: period.Start, End: period.End, History: history, Contracts: contracts, DailyBytes: daily})
}

// contracts reads a user's contract history, ascending.
func (s *Store) contracts(ctx context.Context, userID string) (Contracts, error) {
	var out Contracts
	err := database.ReadSnapshot(ctx, s.pool, func(b *pgx.Batch) {
		b.Queue(`
		SELECT effective_from, base_monthly, per_gb, currency FROM user_contracts
		 WHERE user_id = $1 ORDER BY effective_from`, userID)
	}, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		out = nil // a run on a standby may have failed part way
		var c DatedContract
		_, err = pgx.ForEachRow(rows, []any{&c.EffectiveFrom, &c.BaseMonthly, &c.PerGB, &c.Currency}, func() error {
			c.EffectiveFrom = c.EffectiveFrom.UTC()
			out = append(out, c)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read contracts: %w", err)
	}
	return out, nil
}

// PlanLimit is the limit the plan of tier carries, nil for none.
func (s *Store) PlanLimit(tier string) *limit.Limit { return s.plans.Limit(tier) }

// Account is a user as an admin sees it.
type Account struct {
	UserID          string          `json:"userId"`
	Tier            string          `json:"tier"`
	TierHistory     []TierEntry     `json:"tierHistory"`
	Contract        *ContractJSON   `json:"contract"` // in effect today
	ContractHistory []ContractEntry `json:"contractHistory"`
	Limits          *limit.JSON     `json:"limits"` // the user's own; null: the plan's, if any
}

// ContractEntry is an entry of the contract history as served.
type ContractEntry struct {
	EffectiveFrom string `json:"effectiveFrom"`
	ContractJSON
}

// TierEntry is an entry of the tier history as served.
type TierEntry struct {
	Tier          string `json:"tier"`
	EffectiveFrom string `json:"effectiveFrom"`
}

// MaxAccountBytes bounds an AccountUpdate's JSON body.
const MaxAccountBytes = 64 << 10

// AccountUpdate changes a user's account (PUT /admin/users/{userId}).
// Every change is optional; what it leaves out stays as it was.
type AccountUpdate struct {
	UserID        string
	Tier          string    // "": keep
	EffectiveFrom time.Time // of the tier and the contract, a UTC day; zero: today
	// Contract applies from EffectiveFrom on; ClearContract removes the
	// contract history instead; neither keeps it.
	Contract      *ContractInput
	ClearContract bool
	// Limits replaces the user's own limit; ClearLimits removes it (the
	// plan's applies); neither keeps it.
	Limits      *limit.Input
	ClearLimits bool
}

// ContractInput is an enterprise contract as sent: amounts are decimal
// strings.
type ContractInput struct {
	BaseMonthly string `json:"baseMonthly"`
	PerGB       string `json:"perGB"`
	Currency    string `json:"currency"` // default the plans' currency
}

// Contract bounds: prices a real contract may have, far inside the
// numeric(20,9) columns that store them (11 integer digits, 9 decimals).
var (
	MaxBaseMonthly = decimal.New(1, 9) // 1,000,000,000 per month
	MaxPerGB       = decimal.New(1, 6) // 1,000,000 per GB
)

// MaxContractDecimals is how many decimal places a contract price may have.
const MaxContractDecimals = 6

// Validate checks the user id, the tier, the date and the contract's
// amounts (the contract's currency against the plans is checked by
// UpdateAccount).
func (u *AccountUpdate) Validate() error {
	if err := user.ValidateID(u.UserID); err != nil {
		return err
	}
	if u.Contract != nil && u.ClearContract || u.Limits != nil && u.ClearLimits {
		return apperr.Errorf(apperr.Invalid, "an update either sets or clears a contract or limits, not both")
	}
	if u.Tier != "" {
		switch u.Tier {
		case user.TierFree, user.TierPremium, user.TierEnterprise:
		default:
			return apperr.Errorf(apperr.Invalid, "tier must be free, premium or enterprise")
		}
	}
	if !u.EffectiveFrom.IsZero() {
		if u.Tier == "" && u.Contract == nil {
			return apperr.Errorf(apperr.Invalid, "effectiveFrom needs a tier or a contract")
		}
		if !isDay(u.EffectiveFrom) {
			return apperr.Errorf(apperr.Invalid, "effectiveFrom must be a date (YYYY-MM-DD)")
		}
	}
	if u.Contract != nil {
		if _, err := u.Contract.parse(""); err != nil {
			return err
		}
	}
	if u.Limits != nil {
		if _, err := u.Limits.Parse(); err != nil {
			return err
		}
	}
	return nil
}

// isDay reports whether t is a UTC midnight.
func isDay(t time.Time) bool { return t.Equal(rollup.Day(t)) && t.Location() == time.UTC }

// amountPattern is a non-negative decimal with at most
// MaxContractDecimals places: no sign, exponent or spaces.
var amountPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,6})?$`)

func parseAmount(field, s string, limit decimal.Decimal) (decimal.Decimal, error) {
	v, err := decimal.NewFromString(s)
	if err != nil || !amountPattern.MatchString(s) || v.GreaterThan(limit) {
		return decimal.Decimal{}, apperr.Errorf(apperr.Invalid,
			"contract.%s must be a decimal string from 0 to %s with at most %d decimal places, e.g. \"500.00\"",
			field, limit.String(), MaxContractDecimals)
	}
	return v, nil
}

// parse turns the input into a Contract, the currency defaulting to
// defaultCurrency (empty: not checked).
func (in ContractInput) parse(defaultCurrency string) (Contract, error) {
	c := Contract{Currency: cmp.Or(in.Currency, defaultCurrency)}
	var err error
	if c.BaseMonthly, err = parseAmount("baseMonthly", in.BaseMonthly, MaxBaseMonthly); err != nil {
		return Contract{}, err
	}
	if c.PerGB, err = parseAmount("perGB", in.PerGB, MaxPerGB); err != nil {
		return Contract{}, err
	}
	if c.Currency != "" && !currencyPattern.MatchString(c.Currency) {
		return Contract{}, apperr.Errorf(apperr.Invalid, "contract.currency must be a 3-letter ISO 4217 code")
	}
	return c, nil
}

// UpdateAccount sets a user's tier (from a date) and/or contract, creating
// the user if new. Admin only.
func (s *Store) UpdateAccount(ctx context.Context, caller auth.Principal, req AccountUpdate) (Account, error) {
	if !caller.IsAdmin() {
		return Account{}, apperr.Errorf(apperr.Forbidden, "this endpoint requires the admin role")
	}
	if err := req.Validate(); err != nil {
		return Account{}, err
	}
	userID := req.UserID
	from := req.EffectiveFrom
	if from.IsZero() {
		from = rollup.Day(s.now())
	}
	var ownLimit *limit.Limit
	clearLimit := req.ClearLimits
	if req.Limits != nil {
		l, err := req.Limits.Parse()
		if err != nil {
			return Account{}, err
		}
		ownLimit = &l
	}
	var contract *Contract
	clearContract := req.ClearContract
	if req.Contract != nil {
		c, err := req.Contract.parse(s.plans.Currency)
		if err != nil {
			return Account{}, err
		}
		contract = &c
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING`, userID); err != nil {
			return err
		}
		if req.Tier != "" {
			if _, err := tx.Exec(ctx, `
				INSERT INTO user_tiers (user_id, effective_from, tier) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, effective_from) DO UPDATE SET tier = excluded.tier, set_at = now()`,
				userID, from, req.Tier); err != nil {
				return err
			}
		}
		switch {
		case contract != nil:
			if _, err := tx.Exec(ctx, `
				INSERT INTO user_contracts (user_id, effective_from, base_monthly, per_gb, currency) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, effective_from) DO UPDATE SET base_monthly = excluded.base_monthly, per_gb = excluded.per_gb,
				       currency = excluded.currency, updated_at = now()`,
				userID, from, contract.BaseMonthly, contract.PerGB, contract.Currency); err != nil {
				return err
			}
		case clearContract:
			if _, err := tx.Exec(ctx, `DELETE FROM user_contracts WHERE user_id = $1`, userID); err != nil {
				return err
			}
		}
		if ownLimit != nil || clearLimit {
			return limit.Set(ctx, tx, userID, ownLimit)
		}
		return nil
	})
	if err != nil {
		return Account{}, fmt.Errorf("update account: %w", err)
	}
	return s.account(ctx, userID)
}

// GetAccount returns a user's tier, history and contract. Admin only.
func (s *Store) GetAccount(ctx context.Context, caller auth.Principal, userID string) (Account, error) {
	if !caller.IsAdmin() {
		return Account{}, apperr.Errorf(apperr.Forbidden, "this endpoint requires the admin role")
	}
	if err := user.ValidateID(userID); err != nil {
		return Account{}, err
	}
	var exists bool
	if err := database.Reads(s.pool).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`, userID).Scan(&exists); err != nil {
		return Account{}, fmt.Errorf("get account: %w", err)
	}
	if !exists {
		return Account{}, apperr.Errorf(apperr.NotFound, "user not found")
	}
	return s.account(ctx, userID)
}

func (s *Store) account(ctx context.Context, userID string) (Account, error) {
	history, err := s.users.History(ctx, userID)
	if err != nil {
		return Account{}, err
	}
	acc := Account{UserID: userID, Tier: history.On(rollup.Day(s.now())), TierHistory: []TierEntry{}}
	for _, c := range history {
		acc.TierHistory = append(acc.TierHistory, TierEntry{Tier: c.Tier, EffectiveFrom: c.EffectiveFrom.Format(dateLayout)})
	}
	contracts, err := s.contracts(ctx, userID)
	if err != nil {
		return Account{}, err
	}
	acc.ContractHistory = make([]ContractEntry, len(contracts))
	for i, c := range contracts {
		acc.ContractHistory[i] = ContractEntry{EffectiveFrom: c.EffectiveFrom.Format(dateLayout), ContractJSON: c.JSON()}
	}
	if c, _ := contracts.On(rollup.Day(s.now())); c != nil {
		j := c.JSON()
		acc.Contract = &j
	}
	own, err := limit.Own(ctx, database.Reads(s.pool), userID)
	if err != nil {
		return Account{}, err
	}
	if own != nil {
		j := own.JSON()
		acc.Limits = &j
	}
	return acc, nil
}
