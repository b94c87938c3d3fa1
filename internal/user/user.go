// Package user manages users: creation on first authenticated use and the
// tier history that billing reads.
package user

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tiers a user can be on.
const (
	TierFree       = "free"
	TierPremium    = "premium"
	TierEnterprise = "enterprise"
)

// Service is what the API needs of users: a row for every caller it
// authenticated.
type Service interface {
	Ensure(ctx context.Context, id string) error
}

// Store reads and writes users.
type Store struct {
	pool *pgxpool.Pool

	mu    sync.Mutex
	known map[string]struct{} // users known to exist; rows are never deleted
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, known: make(map[string]struct{})}
}

var _ Service = (*Store)(nil)

// knownLimit bounds the in-memory set of known users; past it the set is
// reset, which only costs a few idempotent inserts.
const knownLimit = 100_000

// Ensure creates the user row (tier free, implicitly) on first use.
func (s *Store) Ensure(ctx context.Context, id string) error {
	s.mu.Lock()
	_, ok := s.known[id]
	s.mu.Unlock()
	if ok {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING`, id); err != nil {
		return fmt.Errorf("ensure user: %w", err)
	}
	s.mu.Lock()
	if len(s.known) >= knownLimit {
		clear(s.known)
	}
	s.known[id] = struct{}{}
	s.mu.Unlock()
	return nil
}

// TierChange is one entry of a user's tier history.
type TierChange struct {
	Tier          string    `json:"tier"`
	EffectiveFrom time.Time `json:"-"` // UTC midnight
}

// History is a user's tier history, ordered by EffectiveFrom. Before the
// first entry the tier is free.
type History []TierChange

// On returns the tier in effect on day.
func (h History) On(day time.Time) string {
	tier := TierFree
	for _, c := range h {
		if c.EffectiveFrom.After(day) {
			break
		}
		tier = c.Tier
	}
	return tier
}

// Histories returns the tier histories of users (missing: no history).
func (s *Store) Histories(ctx context.Context, userIDs []string) (map[string]History, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT user_id, effective_from, tier FROM user_tiers
		 WHERE user_id = ANY($1) ORDER BY user_id, effective_from`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("tier history: %w", err)
	}
	out := map[string]History{}
	var uid string
	var c TierChange
	_, err = pgx.ForEachRow(rows, []any{&uid, &c.EffectiveFrom, &c.Tier}, func() error {
		c.EffectiveFrom = c.EffectiveFrom.UTC()
		out[uid] = append(out[uid], c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tier history: %w", err)
	}
	return out, nil
}

// History returns one user's tier history.
func (s *Store) History(ctx context.Context, userID string) (History, error) {
	m, err := s.Histories(ctx, []string{userID})
	if err != nil {
		return nil, err
	}
	return m[userID], nil
}
