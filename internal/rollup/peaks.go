package rollup

import (
	"context"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"proxyusage/internal/database"
)

// slotWidth is the span of a usage_peak_slots row (sql/0013_peak_slots.sql,
// sql/0016, sql/0020). A re-paired connection rewrites the slots its old
// and new start and end fall in, each with all its edges (a busy proxy's
// current slot holds thousands); a changed slot re-reads the slots of its
// hour (sql/0019). 5 minutes: at most 12 slots an hour, 288 a day.
// Changing it needs a migration that drops the slot state (like 0016).
const slotWidth = 5 * time.Minute

func slotOf(t time.Time) time.Time { return t.UTC().Truncate(slotWidth) }

// hourOf is the usage_peak_hours row a slot is summed into
// (sql/0019_peak_hours.sql): a day's peak reads at most 24 hours, and a
// changed slot re-reads at most the 12 slots of its hour.
func hourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// summary is the peak state of consecutive edges (a slot's, an hour's):
// the net change of the open count, and the highest running value after
// an instant's edges, counted from the first edge's start.
type summary struct{ net, top int32 }

// then is a followed by b.
func (a summary) then(b summary) summary { return summary{a.net + b.net, max(a.top, a.net+b.top)} }

// foldSummaries folds the summaries of consecutive, non-empty parts in
// order; ok is false when there are none.
func foldSummaries(parts []summary) (s summary, ok bool) {
	for i, p := range parts {
		if i == 0 {
			s = p
			continue
		}
		s = s.then(p)
	}
	return s, len(parts) > 0
}

type slotKey struct {
	ProxyID string
	Start   time.Time
}

type span struct {
	ProxyID string
	Lo, Hi  time.Time
}

// updatePeaks brings the peak state of the intervals that changed (old
// replaced by fresh, already stored) up to date and stores the peaks of
// every day they touch, which it returns. For a proxy-day with state it
// applies the changed edges (edgeChanges) to the slots they fall in, then
// their hours, and adds ±1 to the midnight counts the intervals cross; a
// day without state yet is filled whole from the stored intervals, once.
func updatePeaks(ctx context.Context, tx pgx.Tx, old, fresh map[ConnKey][]Interval) ([]DayKey, error) {
	days := map[DayKey]bool{}
	dBefore, dAt := map[DayKey]int32{}, map[DayKey]int32{}
	changes := edgeChanges(old, fresh)
	eachChange(old, fresh, func(sign int32, proxyID string, s, e time.Time) {
		for m := Day(s); !m.After(e); m = m.AddDate(0, 0, 1) {
			dk := DayKey{proxyID, m}
			days[dk] = true
			if s.Before(m) { // start < midnight <= end
				dBefore[dk] += sign
			}
			if !s.After(m) && m.Before(e) { // start <= midnight < end
				dAt[dk] += sign
			}
		}
	})
	if len(days) == 0 {
		return nil, nil
	}
	list := sortedDays(days)
	proxies, dates := splitDayKeys(list)
	rows, err := tx.Query(ctx, `
		SELECT d.proxy_id, d.day FROM unnest($1::text[], $2::date[]) AS k(proxy_id, day)
		  JOIN usage_peak_days d ON d.proxy_id = k.proxy_id AND d.day = k.day`, proxies, dates)
	if err != nil {
		return nil, err
	}
	have := map[DayKey]bool{}
	var dk DayKey
	if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day}, func() error {
		dk.Day = dk.Day.UTC()
		have[dk] = true
		return nil
	}); err != nil {
		return nil, err
	}

	// Midnight counts: ±1 where there is state, counted where there is not.
	var upProxies, fillProxies []string
	var upDays, fillDays []time.Time
	var upBefore, upAt []int32
	var spans []span
	for _, d := range list {
		if !have[d] {
			fillProxies, fillDays = append(fillProxies, d.ProxyID), append(fillDays, d.Day)
			spans = append(spans, span{d.ProxyID, d.Day, d.Day.AddDate(0, 0, 1)})
			continue
		}
		if dBefore[d] != 0 || dAt[d] != 0 {
			upProxies, upDays = append(upProxies, d.ProxyID), append(upDays, d.Day)
			upBefore, upAt = append(upBefore, dBefore[d]), append(upAt, dAt[d])
		}
	}
	if len(upProxies) > 0 {
		if _, err := tx.Exec(ctx, `
			UPDATE usage_peak_days p SET open_before = p.open_before + k.b, open_at = p.open_at + k.a
			  FROM unnest($1::text[], $2::date[], $3::int[], $4::int[]) AS k(proxy_id, day, b, a)
			 WHERE p.proxy_id = k.proxy_id AND p.day = k.day`, upProxies, upDays, upBefore, upAt); err != nil {
			return nil, err
		}
	}
	if len(fillProxies) > 0 {
		// Open at midnight: started before it (at it, for open_at) and
		// ended after; only starts within the proxy's longest interval
		// before midnight can be (sql/0022_connection_bounds.sql).
		if _, err := tx.Exec(ctx, `
			INSERT INTO usage_peak_days (proxy_id, day, open_before, open_at)
			SELECT k.proxy_id, k.day, o.before, o.at
			  FROM unnest($1::text[], $2::date[]) AS k(proxy_id, day)
			 CROSS JOIN LATERAL (SELECT k.day::timestamp AT TIME ZONE 'UTC' AS at) m
			  LEFT JOIN usage_connection_bounds b ON b.proxy_id = k.proxy_id
			 CROSS JOIN LATERAL ( -- one row: an aggregate without GROUP BY
			       SELECT count(*) FILTER (WHERE c.start_time < m.at AND c.end_time >= m.at) AS before,
			              count(*) FILTER (WHERE c.end_time > m.at) AS at
			         FROM usage_connections c
			        WHERE c.proxy_id = k.proxy_id AND c.start_time <= m.at
			          AND c.start_time >= m.at - b.longest_us * interval '1 microsecond') o`, fillProxies, fillDays); err != nil {
			return nil, err
		}
	}

	// Slots: a day with state applies the changes to the edges its slots
	// keep; a day without (or a slot that does not match the intervals) is
	// read from the stored intervals.
	var dirty []slotKey
	for k := range changes {
		if have[DayKey{k.ProxyID, Day(k.Start)}] {
			dirty = append(dirty, k)
		}
	}
	stored, err := readSlotEdges(ctx, tx, dirty)
	if err != nil {
		return nil, err
	}
	slots := make(map[slotKey][]edge, len(dirty))
	written := make([]span, 0, len(spans)+len(dirty))
	for _, k := range dirty {
		s := span{k.ProxyID, k.Start, k.Start.Add(slotWidth)}
		written = append(written, s)
		if es, ok := applyChanges(stored[k], changes[k]); ok {
			slots[k] = es
		} else {
			spans = append(spans, s)
		}
	}
	spans = mergeSpans(spans)
	if err := readIntervalEdges(ctx, tx, spans, nil, slots); err != nil {
		return nil, err
	}
	spans = mergeSpans(append(written, spans...))
	if err := writeSlots(ctx, tx, spans, slots); err != nil {
		return nil, err
	}
	if err := rewriteHours(ctx, tx, spans, slots); err != nil {
		return nil, err
	}
	return list, writeDayPeaks(ctx, tx, list)
}

// eachChange calls fn for every interval of old (sign -1) and of fresh
// (sign +1) that is open at some instant, with its start and end in UTC:
// replacing old by fresh is removing the first and adding the second.
func eachChange(old, fresh map[ConnKey][]Interval, fn func(sign int32, proxyID string, start, end time.Time)) {
	for _, change := range []struct {
		sign int32
		ivs  map[ConnKey][]Interval
	}{{-1, old}, {+1, fresh}} {
		for k, ivs := range change.ivs {
			for _, iv := range ivs {
				if iv.Start.Before(iv.End) { // else open at no instant: no edges
					fn(change.sign, k.ProxyID, iv.Start.UTC(), iv.End.UTC())
				}
			}
		}
	}
}

// mergeSpans sorts spans and merges those that overlap or touch, so no
// edge is read twice.
func mergeSpans(spans []span) []span {
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].ProxyID != spans[j].ProxyID {
			return spans[i].ProxyID < spans[j].ProxyID
		}
		return spans[i].Lo.Before(spans[j].Lo)
	})
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && out[n-1].ProxyID == s.ProxyID && !s.Lo.After(out[n-1].Hi) {
			out[n-1].Hi = maxTime(out[n-1].Hi, s.Hi)
			continue
		}
		out = append(out, s)
	}
	return out
}

// rewriteHours recomputes the hours that spans overlap from their slots,
// already rewritten (slots holds the new edges of every slot within
// spans): an hour is the fold of its slots, and has no row without one.
// An hour inside a span is folded from slots; only an hour a span covers
// in part (a changed slot of a day with state) reads its other slots.
func rewriteHours(ctx context.Context, tx pgx.Tx, spans []span, slots map[slotKey][]edge) error {
	if len(spans) == 0 {
		return nil
	}
	hours := map[slotKey]summary{}
	var partProxies []string
	var partStarts []time.Time
	seen := map[slotKey]bool{}
	for _, s := range spans {
		for h := hourOf(s.Lo); h.Before(s.Hi); h = h.Add(time.Hour) {
			k := slotKey{s.ProxyID, h}
			if seen[k] {
				continue
			}
			seen[k] = true
			if h.Before(s.Lo) || h.Add(time.Hour).After(s.Hi) {
				partProxies, partStarts = append(partProxies, s.ProxyID), append(partStarts, h)
				continue
			}
			var parts []summary
			for t := h; t.Before(h.Add(time.Hour)); t = t.Add(slotWidth) {
				if es := slots[slotKey{s.ProxyID, t}]; len(es) > 0 {
					parts = append(parts, slotSummary(es))
				}
			}
			if sum, ok := foldSummaries(parts); ok {
				hours[k] = sum
			}
		}
	}
	if len(partProxies) > 0 {
		rows, err := tx.Query(ctx, `
			SELECT k.proxy_id, k.hour_start, s.net, s.top
			  FROM unnest($1::text[], $2::timestamptz[]) AS k(proxy_id, hour_start)
			  JOIN usage_peak_slots s ON s.proxy_id = k.proxy_id
			   AND s.slot_start >= k.hour_start AND s.slot_start < k.hour_start + interval '1 hour'
			 ORDER BY k.proxy_id, k.hour_start, s.slot_start`, partProxies, partStarts)
		if err != nil {
			return err
		}
		var k slotKey
		var v summary
		if _, err := pgx.ForEachRow(rows, []any{&k.ProxyID, &k.Start, &v.net, &v.top}, func() error {
			k.Start = k.Start.UTC()
			if h, ok := hours[k]; ok {
				hours[k] = h.then(v)
			} else {
				hours[k] = v
			}
			return nil
		}); err != nil {
			return err
		}
	}
	proxies := make([]string, len(spans))
	los, his := make([]time.Time, len(spans)), make([]time.Time, len(spans))
	for i, s := range spans {
		proxies[i], los[i], his[i] = s.ProxyID, hourOf(s.Lo), s.Hi
	}
	if _, err := tx.Exec(ctx, `
		DELETE FROM usage_peak_hours h USING unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(proxy_id, lo, hi)
		 WHERE h.proxy_id = k.proxy_id AND h.hour_start >= k.lo AND h.hour_start < k.hi`, proxies, los, his); err != nil {
		return err
	}
	if len(hours) == 0 {
		return nil
	}
	var hProxies []string
	var hStarts []time.Time
	var nets, tops []int32
	for k, h := range hours {
		hProxies, hStarts = append(hProxies, k.ProxyID), append(hStarts, k.Start)
		nets, tops = append(nets, h.net), append(tops, h.top)
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO usage_peak_hours (proxy_id, hour_start, net, top)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[])`, hProxies, hStarts, nets, tops)
	return err
}

// writeDayPeaks stores the peaks of days from their state: the open count
// at midnight, or an hour's best running value offset by the count before
// the hour (open just before midnight plus the earlier hours' nets). Any
// instant's count is one of these: after the day's last edge at or before
// it, or the midnight count if there is none.
func writeDayPeaks(ctx context.Context, tx pgx.Tx, days []DayKey) error {
	proxies, dates := splitDayKeys(days)
	rows, err := tx.Query(ctx, `
		SELECT d.proxy_id, d.day, d.open_before, d.open_at, h.net, h.top
		  FROM unnest($1::text[], $2::date[]) AS k(proxy_id, day)
		  JOIN usage_peak_days d ON d.proxy_id = k.proxy_id AND d.day = k.day
		  LEFT JOIN usage_peak_hours h ON h.proxy_id = k.proxy_id
		   AND h.hour_start >= k.day::timestamp AT TIME ZONE 'UTC' AND h.hour_start < (k.day + 1)::timestamp AT TIME ZONE 'UTC'
		 ORDER BY d.proxy_id, d.day, h.hour_start`, proxies, dates)
	if err != nil {
		return err
	}
	peaks := make(map[DayKey]int32, len(days))
	var run map[DayKey]int32 = make(map[DayKey]int32, len(days))
	var dk DayKey
	var before, at int32
	var net, top *int32
	if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &before, &at, &net, &top}, func() error {
		dk.Day = dk.Day.UTC()
		if _, ok := peaks[dk]; !ok {
			peaks[dk], run[dk] = max(at, 0), before
		}
		if net != nil {
			peaks[dk] = max(peaks[dk], run[dk]+*top)
			run[dk] += *net
		}
		return nil
	}); err != nil {
		return err
	}
	values := make([]int32, len(days))
	for i, d := range days {
		values[i] = peaks[d]
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO usage_daily_peak (proxy_id, day, peak)
		SELECT * FROM unnest($1::text[], $2::date[], $3::int[])
		ON CONFLICT (proxy_id, day) DO UPDATE SET peak = excluded.peak`, proxies, dates, values)
	return err
}

// pendingDayPeaks computes, without writing, the peaks of days as they
// will be once the pending connections are re-paired (their stored
// intervals old replaced by fresh), from the stored peak state: a day's
// hours, and for an hour holding an old or new edge its slots, with the
// changes applied to the stored edges of the changed slots. The three
// reads go in one round trip. Days without state yet, or with a changed
// slot that does not match the intervals, are returned in missing, for the
// caller to compute from their intervals.
func pendingDayPeaks(ctx context.Context, p *database.Pipe, days []DayKey, old, fresh map[ConnKey][]Interval) (peaks map[DayKey]int, missing []DayKey, err error) {
	peaks = make(map[DayKey]int, len(days))
	if len(days) == 0 {
		return peaks, nil, nil
	}
	wanted := make(map[DayKey]bool, len(days))
	for _, d := range days {
		wanted[d] = true
	}
	// The changed slots of the requested days, and their hours.
	changes := edgeChanges(old, fresh)
	var dirty []slotKey
	hourSlots := map[slotKey]map[time.Time]summary{}
	var hProxies []string
	var hStarts []time.Time
	for k := range changes {
		if !wanted[DayKey{k.ProxyID, Day(k.Start)}] {
			continue
		}
		dirty = append(dirty, k)
		if h := (slotKey{k.ProxyID, hourOf(k.Start)}); hourSlots[h] == nil {
			hourSlots[h] = map[time.Time]summary{}
			hProxies, hStarts = append(hProxies, h.ProxyID), append(hStarts, h.Start)
		}
	}

	type state struct {
		before, at int32
		hours      map[time.Time]summary
	}
	states := map[DayKey]*state{}
	stored := make(map[slotKey][]edge, len(dirty))
	proxies, dates := splitDayKeys(days)
	err = p.Batch(ctx, func(b *pgx.Batch) {
		b.Queue(`
		SELECT d.proxy_id, d.day, d.open_before, d.open_at, h.hour_start, h.net, h.top
		  FROM unnest($1::text[], $2::date[]) AS k(proxy_id, day)
		  JOIN usage_peak_days d ON d.proxy_id = k.proxy_id AND d.day = k.day
		  LEFT JOIN usage_peak_hours h ON h.proxy_id = k.proxy_id
		   AND h.hour_start >= k.day::timestamp AT TIME ZONE 'UTC' AND h.hour_start < (k.day + 1)::timestamp AT TIME ZONE 'UTC'`, proxies, dates)
		if len(dirty) > 0 {
			b.Queue(`
			SELECT k.proxy_id, k.hour_start, s.slot_start, s.net, s.top
			  FROM unnest($1::text[], $2::timestamptz[]) AS k(proxy_id, hour_start)
			  JOIN usage_peak_slots s ON s.proxy_id = k.proxy_id
			   AND s.slot_start >= k.hour_start AND s.slot_start < k.hour_start + interval '1 hour'`, hProxies, hStarts)
			sProxies, sStarts := splitSlotKeys(dirty)
			b.Queue(slotEdges, sProxies, sStarts)
		}
	}, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var dk DayKey
		var before, at int32
		var hour *time.Time
		var net, top *int32
		if _, err := pgx.ForEachRow(rows, []any{&dk.ProxyID, &dk.Day, &before, &at, &hour, &net, &top}, func() error {
			dk.Day = dk.Day.UTC()
			st := states[dk]
			if st == nil {
				st = &state{before: before, at: at, hours: map[time.Time]summary{}}
				states[dk] = st
			}
			if hour != nil {
				st.hours[hour.UTC()] = summary{*net, *top}
			}
			return nil
		}); err != nil {
			return err
		}
		if len(dirty) == 0 {
			return nil
		}
		if rows, err = br.Query(); err != nil {
			return err
		}
		var h slotKey
		var slot time.Time
		var v summary
		if _, err := pgx.ForEachRow(rows, []any{&h.ProxyID, &h.Start, &slot, &v.net, &v.top}, func() error {
			h.Start = h.Start.UTC()
			hourSlots[h][slot.UTC()] = v
			return nil
		}); err != nil {
			return err
		}
		if rows, err = br.Query(); err != nil {
			return err
		}
		return scanSlotEdges(rows, stored)
	})
	if err != nil {
		return nil, nil, err
	}
	for _, d := range days {
		if states[d] == nil {
			missing = append(missing, d)
		}
	}

	// The changes: midnight counts and dirty slots, within stateful days.
	eachChange(old, fresh, func(sign int32, proxyID string, s, e time.Time) {
		for m := Day(s); !m.After(e); m = m.AddDate(0, 0, 1) {
			st := states[DayKey{proxyID, m}]
			if st == nil {
				continue
			}
			if s.Before(m) {
				st.before += sign
			}
			if !s.After(m) && m.Before(e) {
				st.at += sign
			}
		}
	})
	for _, k := range dirty {
		dk := DayKey{k.ProxyID, Day(k.Start)}
		if states[dk] == nil {
			continue
		}
		es, ok := applyChanges(stored[k], changes[k])
		if !ok { // the slot does not match the intervals: compute the day from them
			delete(states, dk)
			missing = append(missing, dk)
			continue
		}
		slots := hourSlots[slotKey{k.ProxyID, hourOf(k.Start)}]
		if len(es) == 0 {
			delete(slots, k.Start)
		} else {
			slots[k.Start] = slotSummary(es)
		}
	}
	for h, slots := range hourSlots {
		st := states[DayKey{h.ProxyID, Day(h.Start)}]
		if st == nil {
			continue
		}
		if sum, ok := foldSummaries(inOrder(slots)); ok {
			st.hours[h.Start] = sum
		} else {
			delete(st.hours, h.Start)
		}
	}
	for d, st := range states {
		if !wanted[d] {
			continue
		}
		peak := max(st.at, 0)
		if sum, ok := foldSummaries(inOrder(st.hours)); ok {
			peak = max(peak, st.before+sum.top)
		}
		peaks[d] = int(peak)
	}
	return peaks, missing, nil
}

// inOrder returns the summaries of parts by their start time.
func inOrder(parts map[time.Time]summary) []summary {
	starts := make([]time.Time, 0, len(parts))
	for s := range parts {
		starts = append(starts, s)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	out := make([]summary, len(starts))
	for i, s := range starts {
		out[i] = parts[s]
	}
	return out
}
