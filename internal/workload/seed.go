package workload

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"proxyusage/internal/database"
	"proxyusage/internal/ingest"
	"proxyusage/internal/ingest/store"
	"proxyusage/internal/rollup"
)

// DB is what the seeding functions need: a transaction or a connection.
type DB interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// EventColumns are the usage_events columns a direct COPY fills: the
// ingest writer's (store.EventColumns), and received_at.
var EventColumns = append(slices.Clip(store.EventColumns), "received_at")

// CopyEvents copies events into table (usage_events, or a table with its
// columns) with binary COPY, as rows mapped the way the ingest writer maps
// them (store.CopySource), received at receivedAt, and returns the rows
// copied.
func CopyEvents(ctx context.Context, db DB, table string, events []ingest.Event, receivedAt time.Time) (int64, error) {
	ptrs := make([]*ingest.Event, len(events))
	for i := range events {
		ptrs[i] = &events[i]
	}
	n, err := db.CopyFrom(ctx, pgx.Identifier{table}, EventColumns, store.CopySource(ptrs, receivedAt))
	if err != nil {
		return n, fmt.Errorf("workload: copy into %s: %w", table, err)
	}
	return n, nil
}

// LogInvalidations logs what events add to the rollups, as the ingest
// writer does: their rollup deltas (store.Deltas) to usage_rollup_deltas
// and their starts and ends to usage_connection_invalidations, so the
// rollup worker rolls them up.
func LogInvalidations(ctx context.Context, db DB, events []ingest.Event) error {
	deltas := &store.DeltaRow{}
	ptrs := make([]*ingest.Event, len(events))
	for i := range events {
		deltas.Add(&events[i])
		ptrs[i] = &events[i]
	}
	owners := map[string]string{}
	for i := range events {
		owners[events[i].ProxyID] = ""
	}
	ids := slices.Collect(maps.Keys(owners))
	rows, err := db.Query(ctx, `SELECT id, user_id FROM proxies WHERE id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("workload: owners: %w", err)
	}
	var id, user string
	if _, err := pgx.ForEachRow(rows, []any{&id, &user}, func() error { owners[id] = user; return nil }); err != nil {
		return fmt.Errorf("workload: owners: %w", err)
	}
	var logRows []*store.DeltaRow
	for _, byUser := range deltas.ByUser(func(p string) string { return owners[p] }) {
		logRows = append(logRows, byUser.Split(logRowEntries)...)
	}
	if _, err := db.CopyFrom(ctx, pgx.Identifier{"usage_rollup_deltas"}, store.DeltaColumns, store.DeltaSource(logRows)); err != nil {
		return fmt.Errorf("workload: log rollup deltas: %w", err)
	}
	ce := store.ConnectionEventsOf(ptrs, func(p string) string { return owners[p] })
	for lo := 0; lo < len(ce.ProxyIDs); lo += logRowEntries {
		hi := min(lo+logRowEntries, len(ce.ProxyIDs))
		part := store.ConnectionEvents{ProxyIDs: ce.ProxyIDs[lo:hi], ConnectionIDs: ce.ConnectionIDs[lo:hi],
			Times: ce.Times[lo:hi], IsStarts: ce.IsStarts[lo:hi], Owners: ce.Owners[lo:hi]}
		if _, err := db.Exec(ctx, store.LogConnections, part.Args()...); err != nil {
			return fmt.Errorf("workload: log connection events: %w", err)
		}
	}
	return nil
}

// The logs hold one row per ingest flush; bulk set-up writes rows of at
// most logRowEntries entries, so each worker run stays bounded.
const logRowEntries = 5000

// Seed copies the generator's remaining events into usage_events in
// transactions of chunk events, each with its invalidation log entries,
// calling progress after each. It returns the number of events stored.
func Seed(ctx context.Context, pool *pgxpool.Pool, g *Generator, chunk int, progress func(done int)) (int, error) {
	buf := make([]ingest.Event, 0, chunk)
	done := 0
	for {
		buf = g.Next(buf[:0], chunk)
		if len(buf) == 0 {
			return done, nil
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := CopyEvents(ctx, tx, "usage_events", buf, time.Now()); err != nil {
				return err
			}
			return LogInvalidations(ctx, tx, buf)
		})
		if err != nil {
			return done, err
		}
		done += len(buf)
		if progress != nil {
			progress(done)
		}
	}
}

// Tier plan of the generated users: most are free, some premium since
// upgradeDays ago, one in ten enterprise with a contract.
const (
	upgradeDays = 45
)

// SeedAccounts creates the generator's users (with tier history and
// enterprise contracts) and proxies, skipping those that exist. today
// anchors the tier changes.
func SeedAccounts(ctx context.Context, db DB, g *Generator, today time.Time) error {
	users := g.Users()
	var premium, enterprise []string
	for i, u := range users {
		switch {
		case i%10 == 9:
			enterprise = append(enterprise, u)
		case i%10 >= 6:
			premium = append(premium, u)
		}
	}
	ids, owners := make([]string, len(g.proxies)), make([]string, len(g.proxies))
	for i, p := range g.proxies {
		ids[i], owners[i] = p.ID, p.UserID
	}
	since := rollup.Day(today).AddDate(0, 0, -upgradeDays)
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, []any{users}},
		{`INSERT INTO proxies (id, user_id, name) SELECT id, uid, 'bench ' || id FROM unnest($1::text[], $2::text[]) AS p(id, uid)
		   ON CONFLICT DO NOTHING`, []any{ids, owners}},
		{`INSERT INTO user_tiers (user_id, effective_from, tier) SELECT unnest($1::text[]), $2, 'premium' ON CONFLICT DO NOTHING`, []any{premium, since}},
		{`INSERT INTO user_tiers (user_id, effective_from, tier) SELECT unnest($1::text[]), $2, 'enterprise' ON CONFLICT DO NOTHING`, []any{enterprise, since.AddDate(0, 0, -30)}},
		{`INSERT INTO user_contracts (user_id, base_monthly, per_gb, currency) SELECT unnest($1::text[]), 500, 0.005, 'USD' ON CONFLICT DO NOTHING`, []any{enterprise}},
	} {
		if _, err := db.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("workload: seed accounts: %w", err)
		}
	}
	return nil
}

// PairAll is the worker's connection re-pairing for a whole bulk-seeded
// database at once: it streams every start and end event (the stored
// intervals' and unmatched ends', and the logged ones) in one pass,
// pairs each connection with rollup.PairEnds, replaces usage_connections,
// stores the peak (rollup.Peak) of every (proxy, day) an interval covers
// and empties usage_connection_invalidations. The worker
// would do the same connection by connection; on TimescaleDB it looks each
// one up in every chunk, which for millions of seeded connections takes
// far longer than seeding. For bulk set-up only: nothing may ingest
// meanwhile.
func PairAll(ctx context.Context, pool *pgxpool.Pool, maxAge time.Duration, progress func(connections int)) error {
	reader, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer reader.Release()
	type interval struct {
		key       rollup.ConnKey
		iv        rollup.Interval
		unmatched bool // an end no start paired with, at iv.End
	}
	ch := make(chan interval, 4096)
	// Rows come ordered by proxy: each proxy's intervals are complete when
	// the next proxy starts, and its peaks are computed then.
	var (
		peakProxy   string
		proxyByDay  = map[time.Time][]rollup.Interval{}
		peakProxies []string
		peakDays    []time.Time
		peaks       []int32
	)
	finishProxy := func() {
		for d, ivs := range proxyByDay {
			peakProxies, peakDays, peaks = append(peakProxies, peakProxy), append(peakDays, d), append(peaks, int32(rollup.Peak(ivs, d)))
		}
		clear(proxyByDay)
	}
	readErr := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(ch)
		rows, err := reader.Query(rctx, `
			SELECT u.proxy_id, u.connection_id, u.time, u.is_start
			  FROM usage_connection_invalidations l,
			       unnest(l.proxy_ids, l.connection_ids, l.times, l.is_starts) AS u(proxy_id, connection_id, time, is_start)
			UNION ALL
			SELECT proxy_id, connection_id, start_time, true FROM usage_connections WHERE start_time IS NOT NULL
			UNION ALL
			SELECT proxy_id, connection_id, end_time, false FROM usage_connections WHERE paired OR start_time IS NULL
			 ORDER BY 1, 2`)
		if err != nil {
			readErr <- err
			return
		}
		var (
			cur    rollup.ConnKey
			events []rollup.ConnEvent
			n      int
			k      rollup.ConnKey
			ev     rollup.ConnEvent
		)
		flush := func() bool {
			if cur.ProxyID != peakProxy {
				finishProxy()
				peakProxy = cur.ProxyID
			}
			ivs, ends := rollup.PairEnds(events, maxAge)
			for _, iv := range ivs {
				for _, d := range iv.Days() {
					proxyByDay[d] = append(proxyByDay[d], iv)
				}
				select {
				case ch <- interval{key: cur, iv: iv}:
				case <-rctx.Done():
					return false
				}
			}
			for _, end := range ends {
				select {
				case ch <- interval{key: cur, iv: rollup.Interval{End: end}, unmatched: true}:
				case <-rctx.Done():
					return false
				}
			}
			events = events[:0]
			if n++; progress != nil && n%100_000 == 0 {
				progress(n)
			}
			return true
		}
		_, err = pgx.ForEachRow(rows, []any{&k.ProxyID, &k.ConnectionID, &ev.Time, &ev.Start}, func() error {
			if k != cur && len(events) > 0 && !flush() {
				return rctx.Err()
			}
			cur = k
			events = append(events, ev)
			return nil
		})
		if err == nil && len(events) > 0 && !flush() {
			err = rctx.Err()
		}
		finishProxy()
		readErr <- err
	}()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// The worker's peak state described the intervals replaced here: it
		// fills a day's state again the first time it touches the day. The
		// pairing lock keeps a worker's run out meanwhile.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, database.LockRollupPair); err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM usage_connections`, `DELETE FROM usage_connection_invalidations`,
			`DELETE FROM usage_peak_slots`, `DELETE FROM usage_peak_hours`, `DELETE FROM usage_peak_days`} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		var cur interval
		src := pgx.CopyFromFunc(func() ([]any, error) {
			var ok bool
			if cur, ok = <-ch; !ok {
				return nil, nil
			}
			if cur.unmatched {
				return []any{cur.key.ProxyID, cur.key.ConnectionID, nil, cur.iv.End, false}, nil
			}
			return []any{cur.key.ProxyID, cur.key.ConnectionID, cur.iv.Start, cur.iv.End, cur.iv.Paired}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"usage_connections"},
			[]string{"proxy_id", "connection_id", "start_time", "end_time", "paired"}, src); err != nil {
			cancel()
			return fmt.Errorf("workload: store intervals: %w", err)
		}
		if err := <-readErr; err != nil {
			return fmt.Errorf("workload: read connections: %w", err)
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO usage_daily_peak (proxy_id, day, peak)
			SELECT * FROM unnest($1::text[], $2::date[], $3::int[])
			ON CONFLICT (proxy_id, day) DO UPDATE SET peak = excluded.peak`, peakProxies, peakDays, peaks)
		return err
	})
}
