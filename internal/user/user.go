// Package user manages users: creation on first authenticated use and the
// tier history that billing reads.
package user

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Tiers a user can be on.
const (
	TierFree       = "free"
	TierPremium    = "premium"
	TierEnterprise = "enterprise"
)

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
