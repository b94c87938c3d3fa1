package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"proxyusage/internal/apperr"
	"proxyusage/internal/auth"
	"proxyusage/internal/proxy"
	"proxyusage/internal/rollup"
	"proxyusage/internal/usage"
	"proxyusage/internal/user"
)

// Service computes bills and manages accounts (tier history, contracts).
type Service struct {
	pool    *pgxpool.Pool
	plans   Plans
	reader  *rollup.Reader
	proxies *proxy.Store
	users   *user.Store
	now     func() time.Time
}

// Config configures a Service.
type Config struct {
	Pool    *pgxpool.Pool
	Plans   Plans
	Reader  *rollup.Reader
	Proxies *proxy.Store
	Users   *user.Store
	Now     func() time.Time
}

// NewService returns a Service for cfg.
func NewService(cfg Config) (*Service, error) {
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
	return &Service{pool: cfg.Pool, plans: cfg.Plans, reader: cfg.Reader, proxies: cfg.Proxies, users: cfg.Users, now: cfg.Now}, nil
}

// Bill computes the billing summary of a user for a period. Usage comes
// from the same rollups as the reports, so bill and report agree.
func (s *Service) Bill(ctx context.Context, caller auth.Principal, userID, start, end string) (Bill, error) {
	uid, err := caller.Subject(userID)
	if err != nil {
		return Bill{}, err
	}
	period, err := usage.ParsePeriod("periodStart", start, "periodEnd", end)
	if err != nil {
		return Bill{}, err
	}
	list, err := s.proxies.List(ctx, uid)
	if err != nil {
		return Bill{}, err
	}
	ids := make([]string, len(list))
	for i, p := range list {
		ids[i] = p.ID
	}
	daily, err := s.reader.DailyBytes(ctx, ids, period.Start, period.End)
	if err != nil {
		return Bill{}, err
	}
	history, err := s.users.History(ctx, uid)
	if err != nil {
		return Bill{}, err
	}
	contract, err := s.contract(ctx, s.pool, uid)
	if err != nil {
		return Bill{}, err
	}
	return Compute(s.plans, Input{UserID: uid, Start: period.Start, End: period.End, History: history, Contract: contract, DailyBytes: daily})
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Service) contract(ctx context.Context, q queryRower, userID string) (*Contract, error) {
	var c Contract
	err := q.QueryRow(ctx, `SELECT base_monthly, per_gb, currency FROM user_contracts WHERE user_id = $1`, userID).
		Scan(&c.BaseMonthly, &c.PerGB, &c.Currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read contract: %w", err)
	}
	return &c, nil
}

// Account is a user as an admin sees it.
type Account struct {
	UserID      string        `json:"userId"`
	Tier        string        `json:"tier"`
	TierHistory []TierEntry   `json:"tierHistory"`
	Contract    *ContractJSON `json:"contract"`
}

// TierEntry is an entry of the tier history as served.
type TierEntry struct {
	Tier          string `json:"tier"`
	EffectiveFrom string `json:"effectiveFrom"`
}

// AccountUpdate is the body of PUT /admin/users/{userId}.
type AccountUpdate struct {
	Tier          string           `json:"tier"`
	EffectiveFrom string           `json:"effectiveFrom"`
	Contract      *json.RawMessage `json:"contract"`
}

type contractInput struct {
	BaseMonthly string `json:"baseMonthly"`
	PerGB       string `json:"perGB"`
	Currency    string `json:"currency"`
}

func parseAmount(field, s string) (decimal.Decimal, error) {
	v, err := decimal.NewFromString(s)
	if err != nil || v.IsNegative() || s == "" {
		return decimal.Decimal{}, apperr.Errorf(apperr.Invalid, "contract.%s must be a non-negative decimal string, e.g. \"500.00\"", field)
	}
	if v.Exponent() < -9 || v.GreaterThan(decimal.New(1, 12)) {
		return decimal.Decimal{}, apperr.Errorf(apperr.Invalid, "contract.%s has too many digits", field)
	}
	return v, nil
}

// UpdateAccount sets a user's tier (from a date) and/or contract, creating
// the user if new. Admin only.
func (s *Service) UpdateAccount(ctx context.Context, caller auth.Principal, userID string, req AccountUpdate) (Account, error) {
	if !caller.IsAdmin() {
		return Account{}, apperr.Errorf(apperr.Forbidden, "this endpoint requires the admin role")
	}
	if err := user.ValidateID(userID); err != nil {
		return Account{}, err
	}
	if req.Tier == "" && req.Contract == nil {
		return Account{}, apperr.Errorf(apperr.Invalid, "set tier and/or contract")
	}
	var from time.Time
	if req.Tier != "" {
		switch req.Tier {
		case user.TierFree, user.TierPremium, user.TierEnterprise:
		default:
			return Account{}, apperr.Errorf(apperr.Invalid, "tier must be free, premium or enterprise")
		}
		from = rollup.Day(s.now())
		if req.EffectiveFrom != "" {
			var err error
			if from, err = usage.ParseDate("effectiveFrom", req.EffectiveFrom); err != nil {
				return Account{}, err
			}
		}
	} else if req.EffectiveFrom != "" {
		return Account{}, apperr.Errorf(apperr.Invalid, "effectiveFrom needs a tier")
	}
	var contract *Contract
	clearContract := false
	if req.Contract != nil {
		if string(*req.Contract) == "null" {
			clearContract = true
		} else {
			var in contractInput
			if err := json.Unmarshal(*req.Contract, &in); err != nil {
				return Account{}, apperr.Errorf(apperr.Invalid, `contract must be {"baseMonthly": "500.00", "perGB": "0.005", "currency": "USD"}`)
			}
			c := Contract{Currency: in.Currency}
			var err error
			if c.BaseMonthly, err = parseAmount("baseMonthly", in.BaseMonthly); err != nil {
				return Account{}, err
			}
			if c.PerGB, err = parseAmount("perGB", in.PerGB); err != nil {
				return Account{}, err
			}
			if c.Currency == "" {
				c.Currency = s.plans.Currency
			}
			if !currencyPattern.MatchString(c.Currency) {
				return Account{}, apperr.Errorf(apperr.Invalid, "contract.currency must be a 3-letter ISO 4217 code")
			}
			contract = &c
		}
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
			_, err := tx.Exec(ctx, `
				INSERT INTO user_contracts (user_id, base_monthly, per_gb, currency) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id) DO UPDATE SET base_monthly = excluded.base_monthly, per_gb = excluded.per_gb,
				       currency = excluded.currency, updated_at = now()`,
				userID, contract.BaseMonthly, contract.PerGB, contract.Currency)
			return err
		case clearContract:
			_, err := tx.Exec(ctx, `DELETE FROM user_contracts WHERE user_id = $1`, userID)
			return err
		}
		return nil
	})
	if err != nil {
		return Account{}, fmt.Errorf("update account: %w", err)
	}
	return s.account(ctx, userID)
}

// GetAccount returns a user's tier, history and contract. Admin only.
func (s *Service) GetAccount(ctx context.Context, caller auth.Principal, userID string) (Account, error) {
	if !caller.IsAdmin() {
		return Account{}, apperr.Errorf(apperr.Forbidden, "this endpoint requires the admin role")
	}
	if err := user.ValidateID(userID); err != nil {
		return Account{}, err
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`, userID).Scan(&exists); err != nil {
		return Account{}, fmt.Errorf("get account: %w", err)
	}
	if !exists {
		return Account{}, apperr.Errorf(apperr.NotFound, "user not found")
	}
	return s.account(ctx, userID)
}

func (s *Service) account(ctx context.Context, userID string) (Account, error) {
	history, err := s.users.History(ctx, userID)
	if err != nil {
		return Account{}, err
	}
	acc := Account{UserID: userID, Tier: history.On(rollup.Day(s.now())), TierHistory: []TierEntry{}}
	for _, c := range history {
		acc.TierHistory = append(acc.TierHistory, TierEntry{Tier: c.Tier, EffectiveFrom: c.EffectiveFrom.Format(dateLayout)})
	}
	c, err := s.contract(ctx, s.pool, userID)
	if err != nil {
		return Account{}, err
	}
	if c != nil {
		j := c.JSON()
		acc.Contract = &j
	}
	return acc, nil
}
