package rollup_test

import (
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
	"proxyusage/internal/rollup"
	"proxyusage/internal/workload"
	schema "proxyusage/sql"
)

// migrationAggregate returns the select list of the usage_daily continuous
// aggregate as sql/0002_rollups.sql defines it, without the group columns.
func migrationAggregate(t *testing.T) string {
	t.Helper()
	b, err := fs.ReadFile(schema.Migrations, "0002_rollups.sql")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)CREATE MATERIALIZED VIEW usage_daily\s.*?time_bucket\(interval '1 day', time\) AS bucket,(.*?)\s+FROM usage_events`).FindSubmatch(b)
	if m == nil {
		t.Fatal("usage_daily's definition not found in 0002_rollups.sql")
	}
	return string(m[1])
}

// seeded starts the service without its background worker, copies a
// workload's accounts and events straight into the database and rolls
// them up.
func seeded(t *testing.T, b database.Backend, cfg workload.Config) (*apptest.Env, *workload.Generator) {
	t.Helper()
	env := apptest.Start(t, b, apptest.NoWorker)
	ctx := context.Background()
	gen := workload.New(cfg)
	if err := workload.SeedAccounts(ctx, env.DB, gen, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := workload.Seed(ctx, env.DB, gen, 1000, nil); err != nil {
		t.Fatal(err)
	}
	drain(t, env)
	return env, gen
}

func normalizeSQL(s string) string { return strings.Join(strings.Fields(s), " ") }

// The daily aggregate is written twice: as the continuous aggregate of the
// (immutable) migration, and in Go for the recomputes of the rollups that
// deltas are folded into. The two say the same.
func TestAggregateMatchesMigration(t *testing.T) {
	if got, want := normalizeSQL(rollup.AggregateColumns), normalizeSQL(migrationAggregate(t)); got != want {
		t.Fatalf("rollup's aggregate columns differ from sql/0002_rollups.sql's usage_daily:\n go: %s\nsql: %s", got, want)
	}
}

// And they compute the same rows on both backends: over the same events,
// the rolled-up rows (folded from deltas), the migration's query and the
// Go-side query agree row for row.
func TestAggregateRowsAgree(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		now := time.Now().UTC()
		env, _ := seeded(t, b, workload.Config{Seed: 11, Users: 2, Proxies: 5, Start: now.Add(-5 * 24 * time.Hour), End: now.Add(-time.Minute), Events: 4000})

		rolled, bucket := "usage_daily", "time_bucket(interval '1 day', time)"
		if b == database.Postgres {
			bucket = "date_bin(interval '1 day', time, timestamptz '2000-01-01')"
		}
		queries := map[string]string{
			"rollup":    `SELECT proxy_id, bucket, ` + rollup.RollupColumns + ` FROM ` + rolled,
			"migration": `SELECT proxy_id, ` + bucket + ` AS bucket, ` + migrationAggregate(t) + ` FROM usage_events GROUP BY 1, 2`,
			"go":        `SELECT proxy_id, ` + bucket + ` AS bucket, ` + rollup.AggregateColumns + ` FROM usage_events GROUP BY 1, 2`,
		}
		if n := env.Count(`SELECT count(*) FROM (` + queries["rollup"] + `) r`); n < 20 {
			t.Fatalf("only %d rolled-up proxy-days", n)
		}
		for _, pair := range [][2]string{{"rollup", "go"}, {"migration", "go"}} {
			a, b := queries[pair[0]], queries[pair[1]]
			if n := env.Count(fmt.Sprintf(`SELECT count(*) FROM ((%[1]s EXCEPT ALL %[2]s) UNION ALL (%[2]s EXCEPT ALL %[1]s)) d`, a, b)); n != 0 {
				t.Errorf("%d rows differ between the %s and the %s aggregate", n, pair[0], pair[1])
			}
		}
	})
}

// Both read paths take proxy-days from the rollups and the pending
// deltas, never from raw events. Events copied in without a delta stand
// for raw rows the rollups do not hold; neither path may see them.
func TestReadPathsReadTheRollupRelation(t *testing.T) {
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		t.Parallel()
		ctx := context.Background()
		now := time.Now().UTC()
		env, gen := seeded(t, b, workload.Config{Seed: 12, Users: 1, Proxies: 3, Start: now.Add(-3 * 24 * time.Hour), End: now.Add(-time.Minute), Events: 600})
		var ids []string
		for _, p := range gen.Proxies() {
			ids = append(ids, p.ID)
		}
		// Tomorrow: past every rolled-up day.
		tomorrow := rollup.Day(now).AddDate(0, 0, 1)
		unlogged := workload.New(workload.Config{Seed: 13, Users: 1, Proxies: 3, Start: tomorrow, End: tomorrow.Add(time.Hour), Events: 50, Prefix: "u"})
		if _, err := workload.CopyEvents(ctx, env.DB, "usage_events", unlogged.Next(nil, 50), now); err != nil {
			t.Fatal(err)
		}
		reader, err := rollup.NewReader(ctx, env.Main.Pool, b, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		from := tomorrow.AddDate(0, 0, -4)
		fast, ok, err := reader.FastTotals(ctx, ids, from, tomorrow, rollup.ByDay)
		if err != nil || !ok {
			t.Fatalf("fast path: ok %v, %v", ok, err)
		}
		slow, err := reader.SlowTotals(ctx, ids, from, tomorrow, rollup.ByDay)
		if err != nil {
			t.Fatal(err)
		}
		// Tomorrow may hold a peak (a seeded connection without an end
		// stays open until start + MAX_CONNECTION_AGE, across midnight),
		// never the unrolled events.
		if got, seen := slow[rollup.Key{Day: tomorrow}]; seen && (got.EventCount != 0 || got.FirstEventAt != nil) {
			t.Errorf("the full path read unrolled raw events of %s: %+v", tomorrow.Format(time.DateOnly), *got)
		}
		if err := sameTotals(fast, slow); err != nil {
			t.Fatal(err)
		}
	})
}
