package http_test

// An independent oracle for the read API: a plain reference computation of
// every metric of docs/metrics.md over the list of accepted events, compared
// field by field with every read endpoint, on a seeded random workload, on every
// backend, before and after rollups and after a wave of late events. The
// oracle is written from docs/metrics.md alone; it shares no code with
// internal/rollup or internal/usage.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"proxyusage/internal/apptest"
	"proxyusage/internal/database"
)

const (
	oracleSeed   uint64 = 0x5eed20260003
	oracleMaxAge        = 24 * time.Hour // MAX_CONNECTION_AGE default
	oracleDay           = "2006-01-02"
	oracleSpan          = 16 // days covered by the range queries: today-16 .. today
)

// ---------------------------------------------------------------------------
// Workload

// oEvent is one event as sent. Optional numbers are -1 when absent.
type oEvent struct {
	Proxy     string
	Type      string
	ID        string // "" = no eventId
	At        time.Time
	Zone      *time.Location // offset the timestamp is written in (nil: Z)
	Conn      string
	Sent      int64 // bytesSent (or dataBytes when DataBytes)
	DataBytes bool
	Recv      int64
	Dur       int64 // durationSeconds in µs
	Lat       int64 // latencyMs in µs
	Msg       string
	IP        string
}

func (e oEvent) key() string { return e.Proxy + "\x00" + e.ID }

func (e oEvent) payload(withProxy bool) map[string]any {
	at := e.At
	if e.Zone != nil {
		at = at.In(e.Zone)
	}
	m := map[string]any{"eventType": e.Type, "timestamp": at.Format(time.RFC3339Nano)}
	if withProxy {
		m["proxyId"] = e.Proxy
	}
	if e.ID != "" {
		m["eventId"] = e.ID
	}
	d := map[string]any{}
	if e.Conn != "" {
		d["connectionId"] = e.Conn
	}
	if e.Sent >= 0 {
		if e.DataBytes {
			d["dataBytes"] = e.Sent
		} else {
			d["bytesSent"] = e.Sent
		}
	}
	if e.Recv >= 0 {
		d["bytesReceived"] = e.Recv
	}
	if e.Dur >= 0 {
		d["durationSeconds"] = json.Number(fmt.Sprintf("%d.%06d", e.Dur/1e6, e.Dur%1e6))
	}
	if e.Lat >= 0 {
		d["latencyMs"] = json.Number(fmt.Sprintf("%d.%03d", e.Lat/1000, e.Lat%1000))
	}
	if e.Msg != "" {
		d["errorMessage"] = e.Msg
	}
	if e.IP != "" {
		d["ipAddress"] = e.IP
	}
	if len(d) > 0 {
		m["eventData"] = d
	}
	return m
}

// oChunk is one request: a batch (service token) or single /record calls
// (owner token), in order.
type oChunk struct {
	single bool
	events []oEvent
}

type oUser struct {
	name    string
	proxies []string
}

type oWorkload struct {
	now   time.Time
	users []oUser
	owner map[string]string
	wave1 []oChunk // initial ingest
	wave2 []oChunk // late events for past days, duplicates
}

func (w *oWorkload) proxies() []string {
	var ps []string
	for _, u := range w.users {
		ps = append(ps, u.proxies...)
	}
	sort.Strings(ps)
	return ps
}

type oGen struct {
	r            *rand.Rand
	now, lo, hi  time.Time
	nConn, nID   map[string]int
	unpairedOld  map[string][]oEvent // starts generated without an end, long closed
	unpairedOpen map[string][]oEvent // starts generated without an end, still open
	pairs        map[string][][2]oEvent
	bursts       map[string][]time.Time
	zones        []*time.Location
}

func (g *oGen) between(a, b time.Time) time.Time {
	if !b.After(a) {
		return a
	}
	return a.Add(time.Duration(g.r.Int64N(int64(b.Sub(a)/time.Microsecond))) * time.Microsecond)
}

// validStart keeps starts out of the band whose synthetic close
// (start + 24 h) falls near the test's run time, so openConnections does not
// depend on how long the test takes.
func (g *oGen) validStart(t time.Time) bool {
	return !t.Before(g.lo) && !t.After(g.hi) &&
		(!t.After(g.now.Add(-26*time.Hour)) || !t.Before(g.now.Add(-22*time.Hour)))
}

func (g *oGen) startIn(a, b time.Time) time.Time {
	for range 1000 {
		if t := g.between(a, b); g.validStart(t) {
			return t
		}
	}
	panic("oracle: no valid start time")
}

func (g *oGen) conn(p string) string {
	g.nConn[p]++
	return fmt.Sprintf("conn-%d", g.nConn[p])
}

func (g *oGen) ev(p, typ string, at time.Time) oEvent {
	e := oEvent{Proxy: p, Type: typ, At: at.Truncate(time.Microsecond), Sent: -1, Recv: -1, Dur: -1, Lat: -1}
	if g.r.IntN(100) < 85 {
		// Per-proxy counters: the same eventId on two proxies is two events.
		g.nID[p]++
		e.ID = fmt.Sprintf("e%d", g.nID[p])
	}
	if g.r.IntN(10) == 0 {
		e.Zone = g.zones[g.r.IntN(len(g.zones))]
	}
	return e
}

func (g *oGen) latency() int64 {
	switch g.r.IntN(50) {
	case 0:
		return 0
	case 1:
		return 1 // 0.001 ms
	}
	return int64(math.Exp(g.r.NormFloat64()*1.5 + math.Log(20000)))
}

func (g *oGen) maybeLat(pct int) int64 {
	if g.r.IntN(100) < pct {
		return g.latency()
	}
	return -1
}

func (g *oGen) addBytes(e *oEvent) {
	switch g.r.IntN(3) {
	case 0:
		e.Sent = g.r.Int64N(5_000_000)
	case 1:
		e.Recv = g.r.Int64N(5_000_000)
	default:
		e.Sent, e.Recv = g.r.Int64N(5_000_000), g.r.Int64N(5_000_000)
	}
	e.DataBytes = e.Sent >= 0 && g.r.IntN(3) == 0
}

func (g *oGen) start(p, c string, at time.Time) oEvent {
	e := g.ev(p, "connection_start", at)
	e.Conn = c
	e.Lat = g.maybeLat(30)
	if g.r.IntN(3) == 0 {
		e.IP = fmt.Sprintf("10.%d.%d.%d", g.r.IntN(256), g.r.IntN(256), g.r.IntN(256))
	}
	return e
}

func (g *oGen) end(p, c string, at time.Time, dur time.Duration) oEvent {
	e := g.ev(p, "connection_end", at)
	e.Conn = c
	if g.r.IntN(100) < 85 { // most ends carry their duration
		if dur < 0 {
			dur = time.Duration(g.r.Int64N(int64(time.Hour)))
		}
		e.Dur = int64(dur / time.Microsecond)
	}
	if g.r.IntN(100) < 30 {
		g.addBytes(&e)
	}
	e.Lat = g.maybeLat(20)
	return e
}

func (g *oGen) transfer(p string, at time.Time) oEvent {
	e := g.ev(p, "data_transfer", at)
	g.addBytes(&e)
	e.Lat = g.maybeLat(40)
	return e
}

func (g *oGen) errorEv(p string, at time.Time) oEvent {
	e := g.ev(p, "error", at)
	e.Msg = fmt.Sprintf("upstream failure %d", g.r.IntN(1000))
	e.Lat = g.maybeLat(50)
	if g.r.IntN(10) == 0 {
		g.addBytes(&e)
	}
	return e
}

// connection emits a start, some transfers and (when hasEnd) the end.
func (g *oGen) connection(p, c string, s, e time.Time, hasEnd bool) []oEvent {
	out := []oEvent{g.start(p, c, s)}
	until := e
	if !hasEnd {
		until = s.Add(time.Hour)
	}
	if until.After(g.hi) {
		until = g.hi
	}
	for range g.r.IntN(4) {
		out = append(out, g.transfer(p, g.between(s, until)))
	}
	if hasEnd {
		end := g.end(p, c, e, e.Sub(s))
		out = append(out, end)
		g.pairs[p] = append(g.pairs[p], [2]oEvent{out[0], end})
	}
	return out
}

func (g *oGen) proxyWave1(p string) []oEvent {
	r := g.r
	var out []oEvent
	// Ordinary connections: short, medium and long (some cross midnight,
	// some last longer than MAX_CONNECTION_AGE and stay open until their end).
	for range 70 {
		s := g.startIn(g.lo, g.hi)
		var d time.Duration
		switch x := r.IntN(100); {
		case x < 60:
			d = time.Second + time.Duration(r.Int64N(int64(10*time.Minute)))
		case x < 85:
			d = 10*time.Minute + time.Duration(r.Int64N(int64(3*time.Hour)))
		default:
			d = 3*time.Hour + time.Duration(r.Int64N(int64(27*time.Hour)))
		}
		d = d.Truncate(time.Microsecond)
		c := g.conn(p)
		if s.Add(d).After(g.hi) {
			out = append(out, g.connection(p, c, s, s, false)...)
			continue
		}
		out = append(out, g.connection(p, c, s, s.Add(d), true)...)
	}
	// Bursts of overlapping connections, some handing over at the same instant.
	for range 3 {
		t0 := g.startIn(g.lo, g.hi.Add(-2*time.Hour))
		g.bursts[p] = append(g.bursts[p], t0)
		var prevEnd time.Time
		for i := range 3 + r.IntN(6) {
			s := t0.Add(time.Duration(r.Int64N(int64(time.Minute))))
			if i > 0 && r.IntN(3) == 0 && g.validStart(prevEnd) {
				s = prevEnd // starts exactly when the previous one ends
			}
			if !g.validStart(s) {
				continue
			}
			e := s.Add(time.Minute + time.Duration(r.Int64N(int64(30*time.Minute)))).Truncate(time.Microsecond)
			out = append(out, g.connection(p, g.conn(p), s, e, true)...)
			prevEnd = e
		}
	}
	// Midnight crossings, one ending exactly at 00:00:00.
	for i := range 4 {
		m := time.Date(g.now.Year(), g.now.Month(), g.now.Day()-1-r.IntN(9), 0, 0, 0, 0, time.UTC)
		s := m.Add(-time.Second - time.Duration(r.Int64N(int64(40*time.Minute)))).Truncate(time.Microsecond)
		e := m.Add(time.Second + time.Duration(r.Int64N(int64(40*time.Minute)))).Truncate(time.Microsecond)
		if i == 0 {
			e = m
		}
		if !g.validStart(s) || e.After(g.hi) {
			continue
		}
		out = append(out, g.connection(p, g.conn(p), s, e, true)...)
	}
	// Starts without ends: long closed (start + 24 h) and still open now.
	for range 3 {
		s := g.startIn(g.lo, g.now.Add(-26*time.Hour))
		ev := g.connection(p, g.conn(p), s, s, false)
		g.unpairedOld[p] = append(g.unpairedOld[p], ev[0])
		out = append(out, ev...)
	}
	for range 2 {
		s := g.between(g.now.Add(-22*time.Hour), g.hi)
		ev := g.connection(p, g.conn(p), s, s, false)
		g.unpairedOpen[p] = append(g.unpairedOpen[p], ev[0])
		out = append(out, ev...)
	}
	// Ends without starts.
	for range 3 {
		out = append(out, g.end(p, g.conn(p), g.between(g.lo, g.hi), -1))
	}
	// An end stamped before its start.
	for range 2 {
		s := g.startIn(g.lo.Add(time.Hour), g.hi)
		c := g.conn(p)
		out = append(out, g.start(p, c, s), g.end(p, c, s.Add(-time.Microsecond-time.Duration(r.Int64N(int64(time.Hour)))), -1))
	}
	// A start and its own end at the same instant.
	for range 2 {
		s := g.startIn(g.lo, g.hi)
		out = append(out, g.connection(p, g.conn(p), s, s, true)...)
	}
	// Reused connection ids: the second start at or after the first end.
	for range 3 {
		c := g.conn(p)
		s1 := g.startIn(g.lo, g.hi.Add(-3*time.Hour))
		e1 := s1.Add(time.Duration(r.Int64N(int64(time.Hour)))).Truncate(time.Microsecond)
		s2 := e1
		if r.IntN(2) == 0 {
			s2 = e1.Add(time.Duration(r.Int64N(int64(time.Hour)))).Truncate(time.Microsecond)
		}
		e2 := s2.Add(time.Duration(r.Int64N(int64(time.Hour)))).Truncate(time.Microsecond)
		if !g.validStart(s2) || e2.After(g.hi) {
			continue
		}
		out = append(out, g.connection(p, c, s1, e1, true)...)
		out = append(out, g.connection(p, c, s2, e2, true)...)
	}
	// Standalone transfers and errors.
	for range 15 {
		out = append(out, g.transfer(p, g.between(g.lo, g.hi)))
	}
	for range 15 {
		out = append(out, g.errorEv(p, g.between(g.lo, g.hi)))
	}
	return out
}

func (g *oGen) proxyWave2(p string) []oEvent {
	r := g.r
	var out []oEvent
	// Close connections started days earlier (open until this late end).
	old := g.unpairedOld[p]
	for i := range min(2, len(old)) {
		s := old[i].At
		e := s.Add(40*time.Hour + time.Duration(r.Int64N(int64(32*time.Hour)))).Truncate(time.Microsecond)
		if e.After(g.hi) {
			e = g.between(s.Add(25*time.Hour), g.hi)
		}
		out = append(out, g.end(p, old[i].Conn, e, e.Sub(s)))
	}
	// Close one that is still open now.
	if open := g.unpairedOpen[p]; len(open) > 0 {
		e := g.between(open[0].At, g.hi)
		out = append(out, g.end(p, open[0].Conn, e, e.Sub(open[0].At)))
	}
	// Late starts overlapping existing bursts, with and without an end.
	for i, t0 := range g.bursts[p] {
		s := t0.Add(time.Duration(r.Int64N(int64(30 * time.Second))))
		if !g.validStart(s) {
			continue
		}
		e := s.Add(10*time.Minute + time.Duration(r.Int64N(int64(30*time.Minute)))).Truncate(time.Microsecond)
		out = append(out, g.connection(p, g.conn(p), s, e, i != 0)...)
	}
	// A late start before an existing paired start of the same id: it takes
	// that end, and the existing start is left without one.
	if pairs := g.pairs[p]; len(pairs) > 0 {
		for range 2 {
			pr := pairs[r.IntN(len(pairs))]
			s0 := pr[0].At.Add(-time.Minute - time.Duration(r.Int64N(int64(3*time.Hour)))).Truncate(time.Microsecond)
			if g.validStart(s0) && g.validStart(pr[0].At) {
				out = append(out, g.start(p, pr[0].Conn, s0))
			}
		}
	}
	// Late transfers and errors on past days.
	for range 12 {
		at := g.between(g.now.Add(-9*24*time.Hour), g.now.Add(-2*24*time.Hour))
		if r.IntN(2) == 0 {
			out = append(out, g.transfer(p, at))
		} else {
			out = append(out, g.errorEv(p, at))
		}
	}
	return out
}

// withRetries shuffles events and inserts retries (same proxy and eventId,
// sometimes another payload) after their original, sometimes in the same
// request. from are earlier events that may also be retried.
func (g *oGen) withRetries(events, from []oEvent, pct int) []oEvent {
	r := g.r
	r.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	type item struct {
		pos float64
		e   oEvent
	}
	items := make([]item, 0, len(events)*11/10)
	for i, e := range events {
		items = append(items, item{float64(i), e})
	}
	retry := func(e oEvent, after float64) {
		d := e
		if r.IntN(2) == 0 { // another payload: first write wins
			switch r.IntN(4) {
			case 0:
				d.Sent, d.Recv, d.DataBytes = 999_999, 1, false
			case 1:
				d.Lat = 9_999_999
			case 2:
				if d.Type != "connection_start" {
					d.At = g.between(g.lo, g.hi).Truncate(time.Microsecond)
				}
			default:
				d.Type, d.Conn, d.Dur, d.Msg = "error", "", -1, "retried"
			}
		}
		items = append(items, item{after + 0.5 + r.Float64()*400, d})
	}
	for i, e := range events {
		if e.ID != "" && r.IntN(100) < pct {
			retry(e, float64(i))
		}
	}
	for _, e := range from {
		if e.ID != "" && r.IntN(100) < 2 {
			retry(e, -1+r.Float64()*float64(len(events)))
		}
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].pos < items[j].pos })
	out := make([]oEvent, len(items))
	for i, it := range items {
		out[i] = it.e
	}
	return out
}

func (g *oGen) chunks(events []oEvent, maxBatch int) []oChunk {
	var out []oChunk
	for len(events) > 0 {
		var n int
		var single bool
		if g.r.IntN(100) < 30 {
			n, single = 1+g.r.IntN(8), true
		} else {
			n = 1 + g.r.IntN(maxBatch)
		}
		n = min(n, len(events))
		out = append(out, oChunk{single: single, events: events[:n]})
		events = events[n:]
	}
	return out
}

// edgeProxy builds hand-made scenarios, one per day so that each decides
// that day's peak on its own (D = today 00:00 UTC). It returns the first
// wave and the late wave.
func (g *oGen) edgeProxy(p string, D time.Time) (first, late []oEvent) {
	at := func(day int, h, m int, us int64) time.Time {
		return D.AddDate(0, 0, day).Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(us)*time.Microsecond)
	}
	conn := func(c string, s, e time.Time) []oEvent {
		return []oEvent{g.start(p, c, s), g.end(p, c, e, e.Sub(s))}
	}
	// D-9/D-8: s0 has no end; its synthetic close at s0 + 24 h is an end for
	// the tie rule. b1, b2 end exactly then and c1 starts exactly then:
	// peak 3 on D-8 (2 with a close before 24 h, 4 with starts before ends).
	s0 := at(-9, 2, 0, 1)
	x := s0.Add(oracleMaxAge)
	first = append(first, g.start(p, "s0", s0))
	first = append(first, conn("b1", x.Add(-10*time.Minute), x)...)
	first = append(first, conn("b2", x.Add(-10*time.Minute), x)...)
	first = append(first, conn("c1", x, x.Add(5*time.Minute))...)
	// D-7/D-6: xm ends exactly at 00:00:00 (not open on D-6), zm crosses
	// midnight, ym starts at 00:00:00: peak 2 on both days (3 on D-6 if
	// xm counted there, 1 if zm did not).
	m := at(-6, 0, 0, 0)
	first = append(first, conn("xm", m.Add(-2*time.Hour), m)...)
	first = append(first, conn("zm", m.Add(-time.Hour), m.Add(time.Hour))...)
	first = append(first, conn("ym", m, m.Add(30*time.Minute))...)
	// D-5..D-3: a paired connection longer than MAX_CONNECTION_AGE stays
	// open until its end: peak 1 on D-4 (a day without any event of this
	// proxy), 2 on D-3 with mm.
	first = append(first, conn("long", at(-5, 10, 0, 0), at(-3, 10, 0, 0))...)
	first = append(first, conn("mm", at(-3, 9, 0, 0), at(-3, 11, 0, 0))...)
	// D-2: a start and its own end at the same instant inside w1..w3 (never
	// open: peak 3, not 4), then q whose end is stamped before its start: q
	// stays open (start + 24 h) under r1, r2: peak 3 again (2 if q paired
	// with its early end, 4 if the zero-length one stayed open).
	for _, c := range []string{"w1", "w2", "w3"} {
		first = append(first, conn(c, at(-2, 11, 0, 0), at(-2, 13, 0, 0))...)
	}
	first = append(first, conn("zero", at(-2, 12, 0, 0), at(-2, 12, 0, 0))...)
	first = append(first, g.start(p, "q", at(-2, 14, 0, 0)), g.end(p, "q", at(-2, 13, 59, 0), -1))
	first = append(first, conn("r1", at(-2, 14, 30, 0), at(-2, 15, 0, 0))...)
	first = append(first, conn("r2", at(-2, 14, 30, 0), at(-2, 15, 0, 0))...)
	// D-2/D-1: s1 has no end; d1, d2 start exactly at its synthetic close:
	// peak 2 on D-1 (q and s1 before 14:00, d1 and d2 at 18:00; 3 with a
	// close after 24 h or starts before ends).
	s1 := at(-2, 18, 0, 0)
	y := s1.Add(oracleMaxAge)
	first = append(first, g.start(p, "s1", s1))
	first = append(first, conn("d1", y, y.Add(5*time.Minute))...)
	first = append(first, conn("d2", y, y.Add(5*time.Minute))...)

	// Late: s0 gets its end 30 h later (open under c1: D-8 stays 3), and a start of
	// "long" a day before it takes its end (the old start is left alone
	// until start + 24 h).
	late = append(late, g.end(p, "s0", s0.Add(30*time.Hour), 30*time.Hour))
	late = append(late, g.start(p, "long", at(-6, 10, 0, 0)))
	return first, late
}

func genOracleWorkload(seed uint64, now time.Time) *oWorkload {
	g := &oGen{
		r:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now: now, lo: now.Add(-10 * 24 * time.Hour), hi: now.Add(-3 * time.Minute),
		nConn: map[string]int{}, nID: map[string]int{},
		unpairedOld: map[string][]oEvent{}, unpairedOpen: map[string][]oEvent{},
		pairs: map[string][][2]oEvent{}, bursts: map[string][]time.Time{},
		zones: []*time.Location{time.FixedZone("", 2*3600), time.FixedZone("", -(5*3600 + 30*60))},
	}
	w := &oWorkload{now: now, owner: map[string]string{}, users: []oUser{
		{"alice", []string{"alice-1", "alice-2", "alice-3", "alice-9"}}, // alice-9: never any event
		{"bob", []string{"bob-1", "bob-2", "bob-3"}},                    // bob-3: only late events
		{"carol", []string{"carol-1", "carol-2"}},                       // carol-2: hand-made edge cases
	}}
	for _, u := range w.users {
		for _, p := range u.proxies {
			w.owner[p] = u.name
		}
	}
	active := []string{"alice-1", "alice-2", "alice-3", "bob-1", "bob-2", "carol-1"}
	var first []oEvent
	for _, p := range active {
		first = append(first, g.proxyWave1(p)...)
	}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	edgeFirst, edgeLate := g.edgeProxy("carol-2", today)
	first = append(first, edgeFirst...)
	firstSent := g.withRetries(first, nil, 6)
	w.wave1 = g.chunks(firstSent, 400)

	var late []oEvent
	for _, p := range active {
		late = append(late, g.proxyWave2(p)...)
	}
	late = append(late, edgeLate...)
	// A proxy whose first events are all late, with a connection crossing
	// midnight, and a late event on a day that had none (today-12).
	d12 := today.AddDate(0, 0, -12)
	for range 8 {
		s := g.startIn(today.AddDate(0, 0, -9), g.hi.Add(-time.Hour))
		late = append(late, g.connection("bob-3", g.conn("bob-3"), s, s.Add(time.Duration(g.r.Int64N(int64(time.Hour)))).Truncate(time.Microsecond), true)...)
	}
	late = append(late, g.connection("bob-3", g.conn("bob-3"), d12.Add(23*time.Hour+59*time.Minute), d12.Add(24*time.Hour+time.Minute), true)...)
	late = append(late, g.errorEv("alice-1", d12.Add(13*time.Hour+123456*time.Microsecond)), g.transfer("carol-1", d12.Add(time.Hour)))
	w.wave2 = g.chunks(g.withRetries(late, firstSent, 8), 60)
	return w
}

// ---------------------------------------------------------------------------
// Oracle

type oMetrics struct {
	conn, sent, recv, errs, succ, events int64
	peak                                 int64
	durSum, durN                         int64
	lats                                 []int64 // µs
}

func (m *oMetrics) add(o *oMetrics) {
	if o == nil {
		return
	}
	m.conn += o.conn
	m.sent += o.sent
	m.recv += o.recv
	m.errs += o.errs
	m.succ += o.succ
	m.events += o.events
	m.peak = max(m.peak, o.peak)
	m.durSum += o.durSum
	m.durN += o.durN
	m.lats = append(m.lats, o.lats...)
}

type oDayKey struct{ proxy, date string }

type oOracle struct {
	days        map[oDayKey]*oMetrics
	first, last map[string]time.Time
	unpaired    map[string][]time.Time // starts with no paired end
	accepted    int
}

func oDate(t time.Time) string { return t.UTC().Format(oracleDay) }

func buildOracle(sent []oEvent) *oOracle {
	o := &oOracle{days: map[oDayKey]*oMetrics{}, first: map[string]time.Time{}, last: map[string]time.Time{}, unpaired: map[string][]time.Time{}}
	get := func(k oDayKey) *oMetrics {
		m := o.days[k]
		if m == nil {
			m = &oMetrics{}
			o.days[k] = m
		}
		return m
	}
	seen := map[string]bool{}
	type connKey struct{ proxy, conn string }
	starts, ends := map[connKey][]time.Time{}, map[connKey][]time.Time{}
	for _, e := range sent {
		if e.ID != "" {
			if seen[e.key()] {
				continue // a retry: first write wins
			}
			seen[e.key()] = true
		}
		o.accepted++
		m := get(oDayKey{e.Proxy, oDate(e.At)})
		m.events++
		switch e.Type {
		case "connection_start":
			m.conn++
			starts[connKey{e.Proxy, e.Conn}] = append(starts[connKey{e.Proxy, e.Conn}], e.At)
		case "connection_end":
			m.succ++
			ends[connKey{e.Proxy, e.Conn}] = append(ends[connKey{e.Proxy, e.Conn}], e.At)
			if e.Dur >= 0 {
				m.durSum += e.Dur
				m.durN++
			}
		case "error":
			m.errs++
		}
		if e.Sent >= 0 {
			m.sent += e.Sent
		}
		if e.Recv >= 0 {
			m.recv += e.Recv
		}
		if e.Lat >= 0 {
			m.lats = append(m.lats, e.Lat)
		}
		if f, ok := o.first[e.Proxy]; !ok || e.At.Before(f) {
			o.first[e.Proxy] = e.At
		}
		if l, ok := o.last[e.Proxy]; !ok || e.At.After(l) {
			o.last[e.Proxy] = e.At
		}
	}
	// Pairing: starts in time order, each takes the earliest unused end of
	// its connectionId at or after it; no end: closes at start + max age.
	type span struct{ s, e time.Time }
	dayIntervals := map[oDayKey][]span{}
	for ck, ss := range starts {
		slices.SortFunc(ss, func(a, b time.Time) int { return a.Compare(b) })
		es := slices.Clone(ends[ck])
		slices.SortFunc(es, func(a, b time.Time) int { return a.Compare(b) })
		used := make([]bool, len(es))
		for _, s := range ss {
			end := s.Add(oracleMaxAge)
			paired := false
			for i, e := range es {
				if !used[i] && !e.Before(s) {
					used[i], end, paired = true, e, true
					break
				}
			}
			if !paired {
				o.unpaired[ck.proxy] = append(o.unpaired[ck.proxy], s)
			}
			if !end.After(s) {
				continue // [s, s) is empty
			}
			for d := time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, time.UTC); d.Before(end); d = d.AddDate(0, 0, 1) {
				d1 := d.AddDate(0, 0, 1)
				cs, ce := s, end
				if cs.Before(d) {
					cs = d
				}
				if ce.After(d1) {
					ce = d1
				}
				if cs.Before(ce) {
					k := oDayKey{ck.proxy, d.Format(oracleDay)}
					dayIntervals[k] = append(dayIntervals[k], span{cs, ce})
				}
			}
		}
	}
	// Exact peak per proxy-day: sweep with ends before starts at equal
	// instants (half-open intervals).
	for k, spans := range dayIntervals {
		type pt struct {
			t time.Time
			d int
		}
		pts := make([]pt, 0, 2*len(spans))
		for _, sp := range spans {
			pts = append(pts, pt{sp.s, +1}, pt{sp.e, -1})
		}
		slices.SortFunc(pts, func(a, b pt) int {
			if c := a.t.Compare(b.t); c != 0 {
				return c
			}
			return a.d - b.d
		})
		var cur, peak int64
		for _, p := range pts {
			cur += int64(p.d)
			peak = max(peak, cur)
		}
		get(k).peak = peak
	}
	return o
}

// sum aggregates proxy-days as docs/metrics.md, "Periods", says: sums, max of peaks, all latency
// samples, summed duration and counts.
func (o *oOracle) sum(proxies, dates []string) oMetrics {
	var m oMetrics
	for _, p := range proxies {
		for _, d := range dates {
			m.add(o.days[oDayKey{p, d}])
		}
	}
	return m
}

func (o *oOracle) lifetime(p string) oMetrics {
	var m oMetrics
	keys := make([]oDayKey, 0)
	for k := range o.days {
		if k.proxy == p {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].date < keys[j].date })
	for _, k := range keys {
		m.add(o.days[k])
	}
	return m
}

func (o *oOracle) hasEvents(p, d string) bool {
	m := o.days[oDayKey{p, d}]
	return m != nil && m.events > 0
}

// ---------------------------------------------------------------------------
// Comparison

type oChecker struct {
	t      *testing.T
	env    *apptest.Env
	w      *oWorkload
	o      *oOracle
	phase  string
	tokens map[string]string
	admin  string
	bodies map[string][]byte
	fails  int
}

func (c *oChecker) errorf(format string, args ...any) {
	c.t.Helper()
	c.fails++
	if c.fails <= 60 {
		c.t.Errorf("[%s] "+format, append([]any{c.phase}, args...)...)
	} else if c.fails == 61 {
		c.t.Errorf("[%s] ... more differences not shown", c.phase)
	}
}

func (c *oChecker) request(method, path, tok string, body any) map[string]any {
	c.t.Helper()
	r := c.env.Do(method, path, tok, body)
	if r.Status != http.StatusOK {
		c.errorf("%s %s: status %d: %s", method, path, r.Status, r.Body)
		return nil
	}
	raw := r.Body
	key := c.phase + " " + method + " " + path
	if body != nil {
		b, _ := json.Marshal(body)
		key += " " + string(b)
	}
	if method == http.MethodPost { // snapshotAt legitimately differs
		var top map[string]json.RawMessage
		if err := json.Unmarshal(raw, &top); err == nil {
			delete(top, "snapshotAt")
			raw, _ = json.Marshal(top)
		}
	}
	c.bodies[key] = raw
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		c.errorf("%s %s: not a JSON object: %s", method, path, r.Body)
		return nil
	}
	return m
}

func (c *oChecker) get(path, tok string) map[string]any {
	c.t.Helper()
	return c.request(http.MethodGet, path, tok, nil)
}

func (c *oChecker) eqString(where, field string, got any, want string) {
	c.t.Helper()
	if s, ok := got.(string); !ok || s != want {
		c.errorf("%s: %s = %v, want %q", where, field, got, want)
	}
}

func (c *oChecker) eqInt(where, field string, got any, want int64) {
	c.t.Helper()
	n, ok := got.(json.Number)
	if !ok {
		c.errorf("%s: %s = %v (%T), want integer %d", where, field, got, got, want)
		return
	}
	v, err := n.Int64()
	if err != nil || v != want {
		c.errorf("%s: %s = %s, want %d", where, field, n, want)
	}
}

// eqFloat compares a nullable number; tol is relative.
func (c *oChecker) eqFloat(where, field string, got any, want float64, null bool, tol float64) {
	c.t.Helper()
	if null {
		if got != nil {
			c.errorf("%s: %s = %v, want null", where, field, got)
		}
		return
	}
	n, ok := got.(json.Number)
	if !ok {
		c.errorf("%s: %s = %v, want %v", where, field, got, want)
		return
	}
	v, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.Abs(v-want) > tol*math.Abs(want)+1e-12 {
		c.errorf("%s: %s = %s, want %v (relative tolerance %g)", where, field, n, want, tol)
	}
}

var oracleFields = []string{"connectionCount", "bytesSent", "bytesReceived", "totalBytes", "peakConcurrentConnections",
	"avgConnectionDurationSeconds", "errorCount", "successCount", "errorRate", "successRate",
	"avgLatencyMs", "p95LatencyMs", "maxLatencyMs", "eventCount"}

// metrics compares one object carrying every daily metric field with want.
func (c *oChecker) metrics(where string, got any, want oMetrics) {
	c.t.Helper()
	m, ok := got.(map[string]any)
	if !ok {
		c.errorf("%s: metrics = %v, want an object", where, got)
		return
	}
	for _, f := range oracleFields {
		if _, ok := m[f]; !ok {
			c.errorf("%s: field %s missing", where, f)
		}
	}
	c.eqInt(where, "connectionCount", m["connectionCount"], want.conn)
	c.eqInt(where, "bytesSent", m["bytesSent"], want.sent)
	c.eqInt(where, "bytesReceived", m["bytesReceived"], want.recv)
	c.eqInt(where, "totalBytes", m["totalBytes"], want.sent+want.recv)
	c.eqInt(where, "peakConcurrentConnections", m["peakConcurrentConnections"], want.peak)
	c.eqInt(where, "errorCount", m["errorCount"], want.errs)
	c.eqInt(where, "successCount", m["successCount"], want.succ)
	c.eqInt(where, "eventCount", m["eventCount"], want.events)
	const tight = 1e-9
	c.eqFloat(where, "avgConnectionDurationSeconds", m["avgConnectionDurationSeconds"],
		float64(want.durSum)/1e6/float64(max(want.durN, 1)), want.durN == 0, tight)
	outcomes := want.errs + want.succ
	c.eqFloat(where, "errorRate", m["errorRate"], float64(want.errs)/float64(max(outcomes, 1)), outcomes == 0, tight)
	c.eqFloat(where, "successRate", m["successRate"], float64(want.succ)/float64(max(outcomes, 1)), outcomes == 0, tight)
	n := len(want.lats)
	var sum, mx int64
	lats := slices.Clone(want.lats)
	slices.Sort(lats)
	for _, l := range lats {
		sum += l
		mx = max(mx, l)
	}
	var p95 int64
	if n > 0 {
		p95 = lats[(95*n+99)/100-1] // nearest rank: ceil(0.95 n)
	}
	c.eqFloat(where, "avgLatencyMs", m["avgLatencyMs"], float64(sum)/1000/float64(max(n, 1)), n == 0, tight)
	c.eqFloat(where, "p95LatencyMs", m["p95LatencyMs"], float64(p95)/1000, n == 0, 0.05)
	c.eqFloat(where, "maxLatencyMs", m["maxLatencyMs"], float64(mx)/1000, n == 0, tight)
}

func oDates(from, to time.Time) []string {
	var ds []string
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		ds = append(ds, d.Format(oracleDay))
	}
	return ds
}

func (c *oChecker) run() {
	c.t.Helper()
	w, o := c.w, c.o
	today := time.Date(w.now.Year(), w.now.Month(), w.now.Day(), 0, 0, 0, 0, time.UTC)
	day := func(n int) time.Time { return today.AddDate(0, 0, -n) }
	all := oDates(day(oracleSpan), today)

	// Per proxy: daily (every day of the span, empty days included), range, summary.
	for _, p := range w.proxies() {
		tok := c.tokens[w.owner[p]]
		for _, d := range all {
			path := "/proxy/usage/" + p + "/metrics/" + d
			if m := c.get(path, tok); m != nil {
				c.eqString(path, "proxyId", m["proxyId"], p)
				c.eqString(path, "date", m["date"], d)
				c.metrics(fmt.Sprintf("GET %s (proxy %s, day %s)", path, p, d), m["metrics"], o.sum([]string{p}, []string{d}))
			}
		}
		for _, rg := range [][2]time.Time{{day(oracleSpan), today}, {day(3), day(1)}} {
			ds := oDates(rg[0], rg[1])
			path := fmt.Sprintf("/proxy/usage/%s/metrics?startDate=%s&endDate=%s", p, ds[0], ds[len(ds)-1])
			m := c.get(path, tok)
			if m == nil {
				continue
			}
			c.eqString(path, "proxyId", m["proxyId"], p)
			c.eqString(path, "startDate", m["startDate"], ds[0])
			c.eqString(path, "endDate", m["endDate"], ds[len(ds)-1])
			c.eqInt(path, "count", m["count"], int64(len(ds)))
			rows, _ := m["metrics"].([]any)
			if len(rows) != len(ds) {
				c.errorf("GET %s: %d entries, want %d (zero-filled)", path, len(rows), len(ds))
				continue
			}
			for i, d := range ds {
				row, _ := rows[i].(map[string]any)
				c.eqString(path, fmt.Sprintf("metrics[%d].date", i), row["date"], d)
				c.metrics(fmt.Sprintf("GET %s (proxy %s, day %s)", path, p, d), row, o.sum([]string{p}, []string{d}))
			}
		}
		path := "/proxy/usage/" + p + "/summary"
		if m := c.get(path, tok); m != nil {
			c.eqString(path, "proxyId", m["proxyId"], p)
			c.metrics("GET "+path+" totals", m["totals"], o.lifetime(p))
			var open int64
			for _, s := range o.unpaired[p] {
				if s.Add(oracleMaxAge).After(w.now) {
					open++
				}
			}
			c.eqInt(path, "openConnections", m["openConnections"], open)
			for _, f := range []struct {
				name string
				want map[string]time.Time
			}{{"firstEventAt", o.first}, {"lastEventAt", o.last}} {
				want, ok := f.want[p]
				if !ok {
					if m[f.name] != nil {
						c.errorf("GET %s: %s = %v, want null", path, f.name, m[f.name])
					}
					continue
				}
				s, _ := m[f.name].(string)
				got, err := time.Parse(time.RFC3339Nano, s)
				if err != nil || !got.Equal(want) {
					c.errorf("GET %s: %s = %v, want %s", path, f.name, m[f.name], want.Format(time.RFC3339Nano))
				}
			}
		}
	}

	// Per user: reports, aggregations, snapshots.
	ranges := [][2]time.Time{{day(oracleSpan), today}, {day(6), day(3)}, {day(1), day(1)}, {day(12), day(12)}}
	for _, u := range w.users {
		tok := c.tokens[u.name]
		proxies := slices.Sorted(slices.Values(u.proxies))
		for _, rg := range ranges {
			ds := oDates(rg[0], rg[1])
			q := fmt.Sprintf("startDate=%s&endDate=%s", ds[0], ds[len(ds)-1])
			total := o.sum(proxies, ds)
			var active []string
			for _, p := range proxies {
				for _, d := range ds {
					if o.hasEvents(p, d) {
						active = append(active, p)
						break
					}
				}
			}
			activeDays := 0
			for _, d := range ds {
				for _, p := range proxies {
					if o.hasEvents(p, d) {
						activeDays++
						break
					}
				}
			}

			path := "/proxy/usage/report?" + q + "&groupBy=day"
			if m := c.get(path, tok); m != nil {
				c.eqString(path, "userId", m["userId"], u.name)
				c.eqString(path, "groupBy", m["groupBy"], "day")
				c.eqString(path, "startDate", m["startDate"], ds[0])
				c.eqString(path, "endDate", m["endDate"], ds[len(ds)-1])
				rows, _ := m["rows"].([]any)
				if len(rows) != len(ds) {
					c.errorf("GET %s: %d rows, want %d (zero-filled)", path, len(rows), len(ds))
				} else {
					for i, d := range ds {
						row, _ := rows[i].(map[string]any)
						c.eqString(path, fmt.Sprintf("rows[%d].date", i), row["date"], d)
						c.metrics(fmt.Sprintf("GET %s (user %s, row day %s)", path, u.name, d), row, o.sum(proxies, []string{d}))
					}
				}
				c.metrics(fmt.Sprintf("GET %s (user %s) totals", path, u.name), m["totals"], total)
			}
			path = "/proxy/usage/report?" + q + "&groupBy=proxy"
			if m := c.get(path, tok); m != nil {
				c.eqString(path, "userId", m["userId"], u.name)
				c.eqString(path, "groupBy", m["groupBy"], "proxy")
				rows, _ := m["rows"].([]any)
				if len(rows) != len(active) {
					c.errorf("GET %s: %d rows, want %d (proxies with events: %v)", path, len(rows), len(active), active)
				} else {
					for i, p := range active {
						row, _ := rows[i].(map[string]any)
						c.eqString(path, fmt.Sprintf("rows[%d].proxyId", i), row["proxyId"], p)
						c.metrics(fmt.Sprintf("GET %s (user %s, row proxy %s)", path, u.name, p), row, o.sum([]string{p}, ds))
					}
				}
				c.metrics(fmt.Sprintf("GET %s (user %s) totals", path, u.name), m["totals"], total)
			}

			aq := fmt.Sprintf("periodStart=%s&periodEnd=%s", ds[0], ds[len(ds)-1])
			checkAgg := func(where string, m map[string]any) {
				c.eqString(where, "userId", m["userId"], u.name)
				c.eqString(where, "tier", m["tier"], "free")
				c.eqString(where, "periodStart", m["periodStart"], ds[0])
				c.eqString(where, "periodEnd", m["periodEnd"], ds[len(ds)-1])
				c.eqInt(where, "proxyCount", m["proxyCount"], int64(len(active)))
				c.eqInt(where, "activeDays", m["activeDays"], int64(activeDays))
				c.metrics(where+" totals", m["totals"], total)
			}
			path = "/proxy/usage/aggregation?" + aq
			if m := c.get(path, tok); m != nil {
				checkAgg("GET "+path+" (user "+u.name+")", m)
			}
			path = "/proxy/usage/aggregation?" + aq + "&userId=" + u.name
			if m := c.get(path, c.admin); m != nil {
				checkAgg("GET "+path+" (admin)", m)
			}
			body := map[string]string{"periodStart": ds[0], "periodEnd": ds[len(ds)-1]}
			if m := c.request(http.MethodPost, "/proxy/usage/aggregate", tok, body); m != nil {
				where := fmt.Sprintf("POST /proxy/usage/aggregate %v (user %s)", body, u.name)
				if _, ok := m["snapshotAt"].(string); !ok {
					c.errorf("%s: snapshotAt = %v", where, m["snapshotAt"])
				}
				if a, ok := m["aggregation"].(map[string]any); ok {
					checkAgg(where+" aggregation", a)
				} else {
					c.errorf("%s: aggregation = %v", where, m["aggregation"])
				}
			}
		}
	}

	// Admin, per tier (everyone is free).
	for _, rg := range ranges[:2] {
		ds := oDates(rg[0], rg[1])
		path := fmt.Sprintf("/proxy/usage/aggregation?groupBy=tier&periodStart=%s&periodEnd=%s", ds[0], ds[len(ds)-1])
		m := c.get(path, c.admin)
		if m == nil {
			continue
		}
		c.eqString(path, "groupBy", m["groupBy"], "tier")
		c.eqString(path, "periodStart", m["periodStart"], ds[0])
		c.eqString(path, "periodEnd", m["periodEnd"], ds[len(ds)-1])
		var users, proxies int64
		for _, u := range w.users {
			has := false
			for _, p := range u.proxies {
				for _, d := range ds {
					if o.hasEvents(p, d) {
						has = true
						proxies++
						break
					}
				}
			}
			if has {
				users++
			}
		}
		total := o.sum(w.proxies(), ds)
		rows, _ := m["rows"].([]any)
		found := false
		for i, r := range rows {
			row, _ := r.(map[string]any)
			if row["tier"] == "free" {
				found = true
				c.eqInt(path, "rows[free].userCount", row["userCount"], users)
				c.eqInt(path, "rows[free].proxyCount", row["proxyCount"], proxies)
				c.metrics("GET "+path+" rows[free].totals", row["totals"], total)
			} else {
				c.eqInt(path, fmt.Sprintf("rows[%d] (tier %v).userCount", i, row["tier"]), row["userCount"], 0)
			}
		}
		if !found {
			c.errorf("GET %s: no row for tier free: %v", path, rows)
		}
	}
}

// send posts the chunks and checks each acknowledgement against the
// expected first-write-wins outcome.
func oSend(t *testing.T, env *apptest.Env, w *oWorkload, chunks []oChunk, seen map[string]bool, service string, tokens map[string]string) {
	t.Helper()
	isNew := func(e oEvent) bool {
		if e.ID == "" {
			return true
		}
		if seen[e.key()] {
			return false
		}
		seen[e.key()] = true
		return true
	}
	for ci, ch := range chunks {
		if ch.single {
			for _, e := range ch.events {
				r := env.Do(http.MethodPost, "/proxy/usage/"+e.Proxy+"/record", tokens[w.owner[e.Proxy]], e.payload(false))
				fresh := isNew(e)
				want, dup := http.StatusCreated, false
				if !fresh {
					want, dup = http.StatusOK, true
				}
				if r.Status != want || r.JSON(t)["duplicate"] != dup {
					t.Fatalf("chunk %d: record %s %s id %q: %d %s, want %d duplicate=%v", ci, e.Proxy, e.Type, e.ID, r.Status, r.Body, want, dup)
				}
			}
			continue
		}
		evs := make([]map[string]any, len(ch.events))
		var acc, dups float64
		for i, e := range ch.events {
			evs[i] = e.payload(true)
			if isNew(e) {
				acc++
			} else {
				dups++
			}
		}
		r := env.Do(http.MethodPost, "/proxy/usage/events", service, map[string]any{"events": evs})
		if r.Status != http.StatusCreated || r.JSON(t)["accepted"] != acc || r.JSON(t)["duplicates"] != dups {
			t.Fatalf("chunk %d: batch of %d: %d %s, want 201 accepted %v duplicates %v", ci, len(evs), r.Status, r.Body, acc, dups)
		}
	}
}

func TestOracle(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	w := genOracleWorkload(oracleSeed, now)
	var sent1, sent2 []oEvent
	for _, ch := range w.wave1 {
		sent1 = append(sent1, ch.events...)
	}
	for _, ch := range w.wave2 {
		sent2 = append(sent2, ch.events...)
	}
	o1 := buildOracle(sent1)
	o2 := buildOracle(append(slices.Clone(sent1), sent2...))
	requests := func(chunks []oChunk) (n int) {
		for _, ch := range chunks {
			if ch.single {
				n += len(ch.events)
			} else {
				n++
			}
		}
		return n
	}
	t.Logf("seed %#x, now %s: wave 1 %d events sent (%d accepted) in %d requests, wave 2 %d sent in %d requests (%d accepted in total)",
		oracleSeed, now.Format(time.RFC3339Nano), len(sent1), o1.accepted, requests(w.wave1), len(sent2), requests(w.wave2), o2.accepted)

	bodies := map[database.Backend]map[string][]byte{}
	var order []database.Backend
	apptest.ForEachBackend(t, func(t *testing.T, b database.Backend) {
		env := apptest.Start(t, b, apptest.NoWorker)
		tokens := map[string]string{}
		for _, u := range w.users {
			tokens[u.name] = apptest.Token(t, u.name)
			for _, p := range u.proxies {
				env.MustRegister(tokens[u.name], p)
			}
		}
		service := apptest.Token(t, "ingestor", "service")
		c := &oChecker{t: t, env: env, w: w, tokens: tokens, admin: apptest.Token(t, "root", "admin"), bodies: map[string][]byte{}}
		rollup := func() {
			t.Helper()
			for i := 0; ; i++ {
				st, err := env.Main.Rollup.RunOnce(t.Context())
				if err != nil {
					t.Fatalf("rollup run %d: %v", i, err)
				}
				if !st.Full {
					return
				}
				if i > 1000 {
					t.Fatal("rollup worker never drains")
				}
			}
		}
		seen := map[string]bool{}

		oSend(t, env, w, w.wave1, seen, service, tokens)
		c.o, c.phase = o1, "1 raw, before any rollup"
		c.run()
		rollup()
		c.phase = "2 rolled up"
		c.run()

		oSend(t, env, w, w.wave2, seen, service, tokens)
		c.o, c.phase = o2, "3 late events, before the worker"
		c.run()
		rollup()
		c.phase = "4 late events, rolled up"
		c.run()

		bodies[b] = c.bodies
		order = append(order, b)
		t.Logf("%s: %d responses compared with the oracle", b, len(c.bodies))
	})

	// Same events, same JSON on every backend.
	if len(order) < 2 {
		t.Logf("only %v available: no cross-backend comparison", order)
		return
	}
	base := bodies[order[0]]
	for _, b := range order[1:] {
		other := bodies[b]
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range base {
				if !yield(k) {
					return
				}
			}
		})
		diffs := 0
		for _, k := range keys {
			ob, ok := other[k]
			if !ok {
				t.Errorf("%s answered %s but %s did not", order[0], k, b)
				continue
			}
			if !bytes.Equal(base[k], ob) {
				if diffs++; diffs <= 10 {
					i := 0
					for i < len(base[k]) && i < len(ob) && base[k][i] == ob[i] {
						i++
					}
					lo := max(0, i-80)
					t.Errorf("%s: JSON differs between backends at byte %d:\n  %s: …%s…\n  %s: …%s…", k, i,
						order[0], oSnippet(base[k], lo, i+80), b, oSnippet(ob, lo, i+80))
				}
			}
		}
		for k := range other {
			if _, ok := base[k]; !ok {
				t.Errorf("%s answered %s but %s did not", b, k, order[0])
			}
		}
		if diffs > 0 {
			t.Errorf("%d of %d responses differ between %s and %s", diffs, len(keys), order[0], b)
		} else {
			t.Logf("%d responses byte-identical on %s and %s", len(keys), order[0], b)
		}
	}
}

func oSnippet(b []byte, lo, hi int) string {
	hi = min(hi, len(b))
	lo = min(lo, hi)
	return strings.ToValidUTF8(string(b[lo:hi]), "?")
}
