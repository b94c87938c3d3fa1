package user_test

import (
	"context"
	"testing"
	"time"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/user"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestEnsure(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		pool := pgtest.NewPool(t, b)
		s := user.NewStore(pool)
		for range 2 { // the second time is a no-op
			for _, id := range []string{"alice", "ユーザー", "😀"} {
				if err := s.Ensure(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Another store (another replica) finds the rows there.
		if err := user.NewStore(pool).Ensure(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE id = ANY($1)`, []string{"alice", "ユーザー", "😀"}).Scan(&n); err != nil || n != 3 {
			t.Fatalf("%d users stored, %v; want 3", n, err)
		}
	})
}

func TestTierHistory(t *testing.T) {
	pgtest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		ctx := context.Background()
		pool := pgtest.NewPool(t, b)
		s := user.NewStore(pool)
		day := func(s string) time.Time {
			d, err := time.Parse("2006-01-02", s)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		changes := map[string][]user.TierChange{
			"alice": {{Tier: user.TierPremium, EffectiveFrom: day("2026-03-01")}, {Tier: user.TierEnterprise, EffectiveFrom: day("2026-06-15")}},
			"bob":   {{Tier: user.TierPremium, EffectiveFrom: day("2026-01-01")}},
			"carol": nil, // never changed: free
		}
		for id, list := range changes {
			if err := s.Ensure(ctx, id); err != nil {
				t.Fatal(err)
			}
			// Inserted newest first: the store orders them.
			for i := len(list) - 1; i >= 0; i-- {
				if _, err := pool.Exec(ctx, `INSERT INTO user_tiers (user_id, effective_from, tier) VALUES ($1, $2, $3)`,
					id, list[i].EffectiveFrom, list[i].Tier); err != nil {
					t.Fatal(err)
				}
			}
		}
		all, err := s.Histories(ctx, []string{"alice", "bob", "carol", "nobody"})
		if err != nil {
			t.Fatal(err)
		}
		for id, want := range changes {
			got := all[id]
			if len(got) != len(want) {
				t.Fatalf("%s: history %+v, want %+v", id, got, want)
			}
			for i := range want {
				if got[i].Tier != want[i].Tier || !got[i].EffectiveFrom.Equal(want[i].EffectiveFrom) || got[i].EffectiveFrom.Location() != time.UTC {
					t.Errorf("%s[%d]: %+v, want %+v (UTC)", id, i, got[i], want[i])
				}
			}
		}
		one, err := s.History(ctx, "alice")
		if err != nil || len(one) != 2 {
			t.Fatalf("history of alice: %+v %v", one, err)
		}
		for d, want := range map[string]string{
			"2026-01-01": user.TierFree, "2026-02-28": user.TierFree, "2026-03-01": user.TierPremium,
			"2026-06-14": user.TierPremium, "2026-06-15": user.TierEnterprise, "2027-01-01": user.TierEnterprise,
		} {
			if got := one.On(day(d)); got != want {
				t.Errorf("alice on %s: %s, want %s", d, got, want)
			}
		}
		if got := all["nobody"].On(day("2026-05-01")); got != user.TierFree {
			t.Errorf("a user without history is %s, want free", got)
		}
	})
}
