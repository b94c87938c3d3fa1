package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/ingest"
	"proxyusage/internal/workload"
)

// catchUp is (6): late events over past days land at once (one COPY with
// their invalidation log entries, as if ingested), and the running
// service's rollup worker (default configuration) absorbs them. Twice:
// the seed stores intervals without peak state, so the first round also
// fills each late day's state from its stored intervals, as a day's first
// touch after a bulk load or a migration that drops the state (0020)
// does; the second round's late days already have state, as the days of
// a database live ingest filled do.
func (b *bench) catchUp(ctx context.Context, pool *pgxpool.Pool, r *reads) error {
	for _, round := range []struct {
		id, what, prefix string
		seed             uint64
	}{
		{"6", "days without peak state (first touch after a bulk load)", "l", 3},
		{"6b", "the same days, now with peak state (as live ingest leaves them)", "m", 13},
	} {
		if err := b.catchUpRound(ctx, pool, r, round.id, round.what, round.prefix, round.seed); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) catchUpRound(ctx context.Context, pool *pgxpool.Pool, r *reads, id, what, prefix string, seed uint64) error {
	from := r.today.AddDate(0, 0, -b.opt.lateDays)
	step("(%s) rollup catch-up: %s late events over the %d days before today, %s", id, count(b.opt.lateEvents), b.opt.lateDays, what)
	gen := workload.New(workload.Config{Seed: b.opt.seed + seed, Users: b.opt.users, Proxies: b.opt.proxies,
		Start: from, End: r.today, Events: b.opt.lateEvents, Prefix: prefix})
	var events []ingest.Event
	for {
		n := len(events)
		if events = gen.Next(events, 100_000); len(events) == n {
			break
		}
	}
	resetStatements(ctx, pool)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := workload.CopyEvents(ctx, tx, "usage_events", events, time.Now()); err != nil {
			return err
		}
		return workload.LogInvalidations(ctx, tx, events)
	})
	if err != nil {
		return err
	}
	t0 := time.Now()
	days, conns, err := pending(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Printf("  committed: %s proxy-days and %s connections to roll up\n", count(days), count(conns))
	start := b.cpu()
	if _, err := watch(ctx, pool, time.Hour); err != nil {
		return err
	}
	took := time.Since(t0)
	end := b.cpu()
	endProgress()
	// The rolled-up answer now includes the late events.
	q := query{userID: r.users[0], proxies: r.owned[r.users[0]], from: from, to: r.today.AddDate(0, 0, -1), token: r.tokens[r.users[0]]}
	q.path = fmt.Sprintf("/proxy/usage/report?startDate=%s&endDate=%s&groupBy=day", q.from.Format(dateLayout), q.to.Format(dateLayout))
	raw, err := r.rawReport("day")(ctx, q)
	if err != nil {
		return err
	}
	body, _, err := r.get(ctx, q)
	if err != nil {
		return err
	}
	if err := checkReport(body, raw); err != nil {
		return fmt.Errorf("after catch-up, API and raw SQL disagree: %w", err)
	}
	speed := float64(len(events)) / took.Seconds()
	target, met := "measured", ""
	if id == "6b" {
		target, met = "≥ 50,000 events/s", yes(speed >= 50_000)
	}
	b.add(result{id, fmt.Sprintf("rollup catch-up: %s late events over %d days, %s, service worker (default batch 5,000)", count(len(events)), b.opt.lateDays, what),
		fmt.Sprintf("%.1f s (%s events/s; %s proxy-days, %s connections re-rolled)", took.Seconds(), rate(speed), count(days), count(conns)),
		target, met})
	b.addEvidence("("+id+") rollup catch-up", "CPU: "+cpuSplit(start, end)+". A report over the late days, computed from raw events afterwards, equals the API's.\n\n"+
		"Server time per statement (`pg_stat_statements`, from the COPY of the late events to the end):\n\n"+topStatements(ctx, pool, 8))
	return nil
}
