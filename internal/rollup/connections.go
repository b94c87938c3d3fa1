package rollup

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/database"
)

// ConnKey identifies one connection id on one proxy.
type ConnKey struct {
	ProxyID      string
	ConnectionID string
}

// DayKey identifies one proxy-day.
type DayKey struct {
	ProxyID string
	Day     time.Time // UTC midnight
}

// intervalsAndEvents selects, for the connections a preceding CTE
// keys(proxy_id, connection_id) names, their stored intervals
// (usage_connections, is_event false) and their start and end events
// (usage_connection_events, is_event true, the instant in both time
// columns and is_start in the last): one index probe a key and table on
// both backends. scanIntervals reads its rows.
const intervalsAndEvents = `
SELECT k.proxy_id, k.connection_id, false, c.start_time, c.end_time, c.paired
  FROM keys k JOIN usage_connections c ON c.proxy_id = k.proxy_id AND c.connection_id = k.connection_id
UNION ALL
SELECT k.proxy_id, k.connection_id, true, e.time, e.time, e.is_start
  FROM keys k JOIN usage_connection_events e ON e.proxy_id = k.proxy_id AND e.connection_id = k.connection_id`

// repairIntervals returns, in one statement, the intervals
// usage_connections holds for keys (old) and those their events pair
// into (fresh).
func repairIntervals(ctx context.Context, tx pgx.Tx, keys []ConnKey, maxAge time.Duration) (old, fresh map[ConnKey][]Interval, err error) {
	if len(keys) == 0 {
		return map[ConnKey][]Interval{}, map[ConnKey][]Interval{}, nil
	}
	proxies, conns := splitConnKeys(keys)
	rows, err := tx.Query(ctx, `
		WITH keys AS (SELECT * FROM unnest($1::text[], $2::text[]) AS k(proxy_id, connection_id))`+intervalsAndEvents, proxies, conns)
	if err != nil {
		return nil, nil, err
	}
	return scanIntervals(rows, maxAge)
}

// pendingIntervals is intervalsAndEvents for the connections of proxies
// $1 that wait to be re-paired: what a read needs of them. The pending
// keys are found once, by the log rows of the proxies' owners
// (pendingRows).
const pendingIntervals = `
WITH keys AS MATERIALIZED (
  SELECT DISTINCT u.proxy_id, u.connection_id
    FROM usage_connection_invalidations l, unnest(l.proxy_ids, l.connection_ids) AS u(proxy_id, connection_id)
   WHERE ` + pendingRows + ` AND u.proxy_id = ANY($1)
)` + intervalsAndEvents

// scanIntervals reads intervalsAndEvents' rows: the connections' stored
// intervals and their intervals once re-paired (Pair of their events). A
// key without rows has neither, and changes nothing.
func scanIntervals(rows pgx.Rows, maxAge time.Duration) (stored, fresh map[ConnKey][]Interval, err error) {
	stored = map[ConnKey][]Interval{}
	events := map[ConnKey][]ConnEvent{}
	var k ConnKey
	var isEvent bool
	var iv Interval
	if _, err := pgx.ForEachRow(rows, []any{&k.ProxyID, &k.ConnectionID, &isEvent, &iv.Start, &iv.End, &iv.Paired}, func() error {
		if isEvent {
			events[k] = append(events[k], ConnEvent{Time: iv.Start, Start: iv.Paired})
		} else {
			stored[k] = append(stored[k], iv)
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	fresh = make(map[ConnKey][]Interval, len(events))
	for k, evs := range events {
		fresh[k] = Pair(evs, maxAge)
	}
	return stored, fresh, nil
}

// overlapping returns, for each proxy-day, the stored intervals open on it
// with their connection ids. It reads each proxy's intervals once, over the
// span from its first to its last requested day: a scan per day would read
// every interval ending after that day, again for each later day.
func overlapping(ctx context.Context, p *database.Pipe, days []DayKey) (map[DayKey][]keyedInterval, error) {
	out := make(map[DayKey][]keyedInterval, len(days))
	if len(days) == 0 {
		return out, nil
	}
	type span struct{ lo, hi time.Time } // first and last day
	spans := map[string]*span{}
	wanted := make(map[DayKey]bool, len(days))
	for _, d := range days {
		wanted[d] = true
		if s, ok := spans[d.ProxyID]; !ok {
			spans[d.ProxyID] = &span{d.Day, d.Day}
		} else {
			s.lo, s.hi = minTime(s.lo, d.Day), maxTime(s.hi, d.Day)
		}
	}
	proxies := make([]string, 0, len(spans))
	los, his := make([]time.Time, 0, len(spans)), make([]time.Time, 0, len(spans))
	for p, s := range spans {
		proxies, los, his = append(proxies, p), append(los, s.lo), append(his, s.hi.AddDate(0, 0, 1))
	}
	rows, err := p.Query(ctx, `
		SELECT c.proxy_id, c.connection_id, c.start_time, c.end_time
		  FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(proxy_id, lo, hi)
		  JOIN usage_connections c ON c.proxy_id = k.proxy_id AND c.end_time > k.lo AND c.start_time < k.hi`, proxies, los, his)
	if err != nil {
		return nil, err
	}
	var proxyID string
	var ki keyedInterval
	_, err = pgx.ForEachRow(rows, []any{&proxyID, &ki.ConnectionID, &ki.Start, &ki.End}, func() error {
		s := spans[proxyID]
		for d := range ki.daysWithin(s.lo, s.hi) {
			if dk := (DayKey{proxyID, d}); wanted[dk] {
				out[dk] = append(out[dk], ki)
			}
		}
		return nil
	})
	return out, err
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type keyedInterval struct {
	ConnectionID string
	Interval
}

func splitConnKeys(keys []ConnKey) ([]string, []string) {
	a, b := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		a[i], b[i] = k.ProxyID, k.ConnectionID
	}
	return a, b
}

func splitDayKeys(keys []DayKey) ([]string, []time.Time) {
	a, b := make([]string, len(keys)), make([]time.Time, len(keys))
	for i, k := range keys {
		a[i], b[i] = k.ProxyID, k.Day
	}
	return a, b
}
