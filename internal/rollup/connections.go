package rollup

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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

// storedRows selects the usage_connections rows of the connections a
// preceding CTE keys(proxy_id, connection_id) names, in scanPairing's
// columns: their intervals and unmatched ends (start_time NULL), is_event
// false. With the events of their pending log entries they are all of the
// connections' events (sql/0021_connection_log_events.sql).
const storedRows = `
SELECT k.proxy_id, k.connection_id, false, c.start_time, c.end_time, c.paired
  FROM keys k JOIN usage_connections c ON c.proxy_id = k.proxy_id AND c.connection_id = k.connection_id`

// storedEvents returns, for the connections keys, every event their
// usage_connections rows stand for (all) and their stored intervals
// (old): the worker pairs all with the connections' new events.
func storedEvents(ctx context.Context, tx pgx.Tx, keys []ConnKey) (all map[ConnKey][]ConnEvent, old map[ConnKey][]Interval, err error) {
	proxies, conns := splitConnKeys(keys)
	rows, err := tx.Query(ctx, `
		WITH keys AS (SELECT * FROM unnest($1::text[], $2::text[]) AS k(proxy_id, connection_id))`+storedRows, proxies, conns)
	if err != nil {
		return nil, nil, err
	}
	return scanPairing(rows)
}

// pendingIntervals selects, for the proxies $1, the stored rows and the
// logged events of their connections that wait to be re-paired: what a
// read needs of them. The pending entries are found once, by the log rows
// of the proxies' owners (pendingRows).
const pendingIntervals = `
WITH logged AS MATERIALIZED (
  SELECT u.proxy_id, u.connection_id, u.time, u.is_start
    FROM usage_connection_invalidations l,
         unnest(l.proxy_ids, l.connection_ids, l.times, l.is_starts) AS u(proxy_id, connection_id, time, is_start)
   WHERE ` + pendingRows + ` AND u.proxy_id = ANY($1)
), keys AS (
  SELECT DISTINCT proxy_id, connection_id FROM logged
)` + storedRows + `
UNION ALL
SELECT proxy_id, connection_id, true, time, time, is_start FROM logged`

// scanPairing reads storedRows' rows, and pendingIntervals' logged events
// (is_event true: the instant in both time columns, is_start in the
// last): every event of each connection (all), and its stored intervals
// (stored).
func scanPairing(rows pgx.Rows) (all map[ConnKey][]ConnEvent, stored map[ConnKey][]Interval, err error) {
	all = map[ConnKey][]ConnEvent{}
	stored = map[ConnKey][]Interval{}
	var k ConnKey
	var isEvent, flag bool
	var start pgtype.Timestamptz
	var end time.Time
	if _, err := pgx.ForEachRow(rows, []any{&k.ProxyID, &k.ConnectionID, &isEvent, &start, &end, &flag}, func() error {
		switch {
		case isEvent:
			all[k] = append(all[k], ConnEvent{Time: end, Start: flag})
		case !start.Valid: // an unmatched end
			all[k] = append(all[k], ConnEvent{Time: end})
		default:
			iv := Interval{Start: start.Time, End: end, Paired: flag}
			all[k] = append(all[k], iv.events()...)
			stored[k] = append(stored[k], iv)
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	return all, stored, nil
}

// pendingPairing reads pendingIntervals' rows: the pending connections'
// stored intervals, and their intervals once re-paired.
func pendingPairing(rows pgx.Rows, maxAge time.Duration) (stored, fresh map[ConnKey][]Interval, err error) {
	all, stored, err := scanPairing(rows)
	if err != nil {
		return nil, nil, err
	}
	fresh = make(map[ConnKey][]Interval, len(all))
	for k, evs := range all {
		fresh[k] = Pair(evs, maxAge)
	}
	return stored, fresh, nil
}

// overlapping returns, for each proxy-day, the stored intervals open on it
// with their connection ids. It reads each proxy's intervals once, over the
// span from its first to its last requested day (a scan per day would read
// the same intervals again for each later day), and only those starting
// within the proxy's longest interval before it (usage_connection_bounds).
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
		  JOIN usage_connection_bounds b ON b.proxy_id = k.proxy_id
		  JOIN usage_connections c ON c.proxy_id = k.proxy_id AND c.end_time > k.lo AND c.start_time < k.hi
		   AND c.start_time >= k.lo - b.longest_us * interval '1 microsecond'`, proxies, los, his)
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
