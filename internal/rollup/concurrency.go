package rollup

import (
	"iter"
	"sort"
	"time"
)

// ConnEvent is a connection_start or connection_end of one connection id on
// one proxy.
type ConnEvent struct {
	Time  time.Time
	Start bool
}

// Interval is a connection open over [Start, End).
type Interval struct {
	Start, End time.Time
	Paired     bool // false: closed synthetically at Start + max age
}

// Pair turns the start and end events of one connection id into intervals
// (docs/metrics.md, "Peak concurrency"): each start, in time order, pairs with the earliest unused
// end at or after it; a start left without an end closes at start + maxAge;
// ends without a start are ignored.
func Pair(events []ConnEvent, maxAge time.Duration) []Interval {
	out, _ := PairEnds(events, maxAge)
	return out
}

// PairEnds is Pair that also returns the ends no start paired with. A
// connection's stored intervals and unmatched ends are all its events
// (usage_connections, sql/0021_connection_log_events.sql): a late event
// is paired with them, not with every event read again.
func PairEnds(events []ConnEvent, maxAge time.Duration) (out []Interval, unmatched []time.Time) {
	var starts, ends []time.Time
	for _, e := range events {
		if e.Start {
			starts = append(starts, e.Time)
		} else {
			ends = append(ends, e.Time)
		}
	}
	sortTimes(starts)
	sortTimes(ends)
	out = make([]Interval, 0, len(starts))
	j := 0
	for _, s := range starts {
		// Ends before this start can never pair with it or any later start.
		for j < len(ends) && ends[j].Before(s) {
			unmatched = append(unmatched, ends[j])
			j++
		}
		if j < len(ends) {
			out = append(out, Interval{Start: s, End: ends[j], Paired: true})
			j++
			continue
		}
		out = append(out, Interval{Start: s, End: s.Add(maxAge), Paired: false})
	}
	return out, append(unmatched, ends[j:]...)
}

// events lists the events iv stands for: its start, and its end when
// paired (an unpaired end is synthetic).
func (iv Interval) events() []ConnEvent {
	if iv.Paired {
		return []ConnEvent{{Time: iv.Start, Start: true}, {Time: iv.End}}
	}
	return []ConnEvent{{Time: iv.Start, Start: true}}
}

func sortTimes(ts []time.Time) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
}

// Day is a UTC calendar day, as its midnight.
func Day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Days lists the UTC days an interval is open on: [Start, End) is half-open,
// so a connection ending at midnight is not open on the new day.
func (iv Interval) Days() []time.Time {
	if !iv.Start.Before(iv.End) {
		return nil
	}
	var out []time.Time
	for d := Day(iv.Start); d.Before(iv.End); d = d.AddDate(0, 0, 1) {
		out = append(out, d)
	}
	return out
}

// daysWithin yields the UTC days from..to (inclusive) the interval is open
// on, without walking the days of a long interval outside them.
func (iv Interval) daysWithin(from, to time.Time) iter.Seq[time.Time] {
	return func(yield func(time.Time) bool) {
		if !iv.Start.Before(iv.End) {
			return
		}
		d := Day(iv.Start)
		if d.Before(from) {
			d = from
		}
		for ; d.Before(iv.End) && !d.After(to); d = d.AddDate(0, 0, 1) {
			if !yield(d) {
				return
			}
		}
	}
}

// Peak returns the exact maximum number of intervals open at the same
// instant within the UTC day starting at day. At equal instants ends apply
// before starts.
func Peak(intervals []Interval, day time.Time) int {
	dayEnd := day.AddDate(0, 0, 1)
	type edge struct {
		at    time.Time
		delta int
	}
	edges := make([]edge, 0, 2*len(intervals))
	for _, iv := range intervals {
		if !iv.Start.Before(iv.End) || !iv.End.After(day) || !iv.Start.Before(dayEnd) {
			continue
		}
		start := iv.Start
		if start.Before(day) {
			start = day
		}
		edges = append(edges, edge{start, +1})
		if iv.End.Before(dayEnd) {
			edges = append(edges, edge{iv.End, -1})
		}
	}
	sort.Slice(edges, func(i, j int) bool {
		if !edges[i].at.Equal(edges[j].at) {
			return edges[i].at.Before(edges[j].at)
		}
		return edges[i].delta < edges[j].delta // ends (-1) first
	})
	open, peak := 0, 0
	for _, e := range edges {
		open += e.delta
		peak = max(peak, open)
	}
	return peak
}
