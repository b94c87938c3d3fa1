package database_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"

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

// A recovery conflict on the standby (SQLSTATE 40001) sends the read to
// the primary, where fn runs again and answers; unmarked contexts never
// reach the standby.
func TestStandbyConflictFallsBackToPrimary(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.NewDB(t, database.Postgres)
	primary, err := database.Connect(ctx, dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	standbyPool, err := database.Connect(ctx, pgtest.StandbyURL(t, dbURL), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer standbyPool.Close()
	m := telemetry.New()
	s, err := database.NewStandby(database.StandbyConfig{Primary: primary, Standby: standbyPool, FenceTimeout: 5 * time.Second,
		Metrics: database.StandbyMetrics{Served: m.ReadsServed, FenceWait: m.ReadFenceWait, Fallbacks: m.ReadFallbacks}})
	if err != nil {
		t.Fatal(err)
	}
	count := func(c interface{ Write(*dto.Metric) error }) float64 {
		var d dto.Metric
		if err := c.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetCounter().GetValue()
	}
	var where []bool // pg_is_in_recovery() of each run
	read := func(ctx context.Context) error {
		where = nil
		return database.ReadOnly(ctx, primary, func(tx pgx.Tx) error {
			var inRecovery bool
			if err := tx.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
				return err
			}
			where = append(where, inRecovery)
			if inRecovery {
				// What a recovery conflict cancelling the query looks like.
				_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'canceling statement due to conflict with recovery' USING ERRCODE = 'serialization_failure'; END $$`)
				return err
			}
			return nil
		})
	}
	if err := read(ctx); err != nil || !slices.Equal(where, []bool{false}) {
		t.Fatalf("unrouted read: %v, ran in recovery %v, want once on the primary", err, where)
	}
	if err := read(s.Route(ctx)); err != nil || !slices.Equal(where, []bool{true, false}) {
		t.Fatalf("routed read: %v, ran in recovery %v, want the standby then the primary", err, where)
	}
	if c, p := count(m.ReadFallbacks.WithLabelValues(database.FallbackConflict)), count(m.ReadsServed.WithLabelValues("primary")); c != 1 || p != 1 {
		t.Fatalf("conflict fallbacks %v, served by the primary %v; want 1 and 1", c, p)
	}
	// Single statements (database.Reads) route the same way.
	var inRecovery bool
	if err := database.Reads(primary).QueryRow(s.Route(ctx), `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("routed QueryRow: in recovery %v, %v", inRecovery, err)
	}
	if err := database.Reads(primary).QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("unrouted QueryRow: in recovery %v, %v", inRecovery, err)
	}
	if n := count(m.ReadsServed.WithLabelValues("standby")); n != 1 {
		t.Fatalf("served by the standby %v, want 1 (the routed QueryRow)", n)
	}
}

// Several standbys are one multi-host READ_DATABASE_URL: with
// target_session_attrs=standby, pgx skips a host that is not one (here
// the primary itself, listed first) and reads go to the standby.
func TestStandbyMultiHostURL(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.NewDB(t, database.Postgres)
	standbyURL := pgtest.StandbyURL(t, dbURL)
	primary, err := database.Connect(ctx, dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	// postgres://postgres@127.0.0.1:P/db?sslmode=disable → both hosts.
	hostOf := func(url string) string { return strings.SplitN(strings.SplitN(url, "@", 2)[1], "/", 2)[0] }
	multi := strings.Replace(standbyURL, hostOf(standbyURL), hostOf(dbURL)+","+hostOf(standbyURL), 1) + "&target_session_attrs=standby"
	pool, err := database.Connect(ctx, multi, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := database.NewStandby(database.StandbyConfig{Primary: primary, Standby: pool, FenceTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var inRecovery bool
		if err := database.Reads(primary).QueryRow(s.Route(ctx), `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil || !inRecovery {
			t.Fatalf("read through %s: in recovery %v, %v", multi, inRecovery, err)
		}
	}
}
