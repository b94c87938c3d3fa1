package database_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"proxyusage/internal/database"
	"proxyusage/internal/pgtest"
	"proxyusage/internal/telemetry"
)

func lsnValue(t *testing.T, lsn string) uint64 {
	t.Helper()
	var hi, lo uint64
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		t.Fatalf("lsn %q: %v", lsn, err)
	}
	return hi<<32 | lo
}

// Reads that arrived before a fence fetch started share it; a read that
// arrived after it started gets a fetch of its own, and its fence is at or
// past every commit acknowledged before it arrived, under concurrency.
func TestFenceIsSharedAndTakenAfterArrival(t *testing.T) {
	ctx := context.Background()
	pool, err := database.Connect(ctx, pgtest.NewDB(t, database.Postgres), 8)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := database.NewStandby(database.StandbyConfig{Primary: pool, Standby: pool})
	if err != nil {
		t.Fatal(err)
	}
	arrived := time.Now()
	var wg sync.WaitGroup
	fences := make([]string, 20)
	for i := range fences {
		wg.Go(func() {
			lsn, _, err := s.FenceAfter(ctx, arrived)
			if err != nil {
				t.Error(err)
			}
			fences[i] = lsn
		})
	}
	wg.Wait()
	if _, fetches, _ := s.FenceAfter(ctx, arrived); fetches != 1 || len(slices.Compact(fences)) != 1 {
		t.Fatalf("%d fetches, fences %v: reads that arrived together should share one", fetches, slices.Compact(fences))
	}
	if _, fetches, _ := s.FenceAfter(ctx, time.Now()); fetches != 2 {
		t.Fatalf("%d fetches: a read arriving after the fetch started needs its own", fetches)
	}

	if _, err := pool.Exec(ctx, `CREATE TABLE w (n int)`); err != nil {
		t.Fatal(err)
	}
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				var acked string
				if err := pool.QueryRow(ctx, `WITH ins AS (INSERT INTO w VALUES ($1)) SELECT pg_current_wal_lsn()::text`, g*100+i).Scan(&acked); err != nil {
					t.Error(err)
					return
				}
				fence, _, err := s.FenceAfter(ctx, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				if lsnValue(t, fence) < lsnValue(t, acked) {
					t.Errorf("fence %s is before %s, a position read before the request arrived", fence, acked)
				}
			}
		})
	}
	wg.Wait()
}

// The fallback reasons the database package counts are the ones the
// metrics pre-create.
func TestFallbackReasonsMatchMetrics(t *testing.T) {
	if !slices.Equal(database.FallbackReasons, telemetry.ReadFallbackReasons) {
		t.Fatalf("database %v, telemetry %v", database.FallbackReasons, telemetry.ReadFallbackReasons)
	}
}
