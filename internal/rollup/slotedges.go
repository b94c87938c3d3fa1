package rollup

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// A slot keeps its edges (the starts and ends of the stored intervals that
// fall in it) in usage_peak_slots.packed_edges (sql/0020_peak_slot_edges.sql,
// sql/0023_packed_slot_edges.sql), so that a change is applied to them
// instead of re-reading the slot's intervals: a live proxy's current slot
// holds every edge of its elapsed part, and was re-read on every run that
// touched it.

// edge is a start (delta +1) or an end (delta -1) of an interval, at an
// instant in unix microseconds (PostgreSQL's precision).
type edge struct {
	at    int64
	delta int32
}

// edgeBytes is the size of an edge in usage_peak_slots.packed_edges: a
// big-endian uint32, twice the edge's offset from its slot's start in
// microseconds, plus one for a start. Edges sorted by instant, an end
// before a start, are sorted words. 4 bytes where the instant and the
// delta took 9: under live ingest a slot of a busy proxy holds hundreds
// of edges, and the worker rewrites and the reads fetch whole slots.
const edgeBytes = 4

// maxEdgeWord fails to compile if a slot is too wide for an edge's
// offset to fit its word.
const maxEdgeWord = uint32(2*slotWidth/time.Microsecond - 1)

var (
	errEdgeBytes = errors.New("rollup: usage_peak_slots.packed_edges is not a whole number of edges")
	errEdgeSlot  = errors.New("rollup: an edge outside its slot")
)

// encodeEdges packs es, edges of the slot starting at slot.
func encodeEdges(slot time.Time, es []edge) ([]byte, error) {
	start := slot.UnixMicro()
	out := make([]byte, 0, len(es)*edgeBytes)
	for _, e := range es {
		off := e.at - start
		if off < 0 || 2*off > int64(maxEdgeWord) {
			return nil, errEdgeSlot
		}
		w := uint32(2 * off)
		if e.delta > 0 {
			w++
		}
		out = binary.BigEndian.AppendUint32(out, w)
	}
	return out, nil
}

// decodeEdges unpacks the edges of the slot starting at slot.
func decodeEdges(slot time.Time, b []byte) ([]edge, error) {
	if len(b)%edgeBytes != 0 {
		return nil, errEdgeBytes
	}
	start := slot.UnixMicro()
	out := make([]edge, len(b)/edgeBytes)
	for i := range out {
		w := binary.BigEndian.Uint32(b[i*edgeBytes:])
		out[i] = edge{start + int64(w>>1), -1}
		if w&1 == 1 {
			out[i].delta = 1
		}
	}
	return out, nil
}

func sortEdges(es []edge) { slices.SortFunc(es, compareEdges) }

// slotSummary is the state of edges sorted by instant: the net change and
// the highest running value after an instant's edges (between them the
// running sum is no instant's count).
func slotSummary(es []edge) summary {
	var s summary
	first := true
	for i, e := range es {
		s.net += e.delta
		if i+1 < len(es) && es[i+1].at == e.at {
			continue
		}
		if first || s.net > s.top {
			s.top, first = s.net, false
		}
	}
	return s
}

// edgeCount is a change to a slot's multiset of edges: count copies of the
// edge added (count > 0) or removed (count < 0).
type edgeCount struct {
	edge
	count int32
}

// edgeChanges returns, per slot, how its multiset of edges changes when
// the intervals old are replaced by fresh. Slots whose edges stay the same
// are left out: a re-paired connection usually keeps its start (a late end
// moves only the end), and a slot's state depends only on its edges.
func edgeChanges(old, fresh map[ConnKey][]Interval) map[slotKey][]edgeCount {
	// Keyed by proxy and edge only (the slot follows from the instant):
	// hashing a time.Time per edge was a visible part of a read's CPU.
	type edgeKey struct {
		proxyID string
		edge
	}
	diff := map[edgeKey]int32{}
	eachChange(old, fresh, func(sign int32, proxyID string, s, e time.Time) {
		diff[edgeKey{proxyID, edge{s.UnixMicro(), 1}}] += sign
		diff[edgeKey{proxyID, edge{e.UnixMicro(), -1}}] += sign
	})
	out := map[slotKey][]edgeCount{}
	for k, n := range diff {
		if n != 0 {
			slot := slotKey{k.proxyID, slotOf(time.UnixMicro(k.at))}
			out[slot] = append(out[slot], edgeCount{k.edge, n})
		}
	}
	return out
}

// applyChanges returns the sorted edges es with changes applied; ok is
// false when an edge to remove is not there, i.e. the stored slot does not
// match the stored intervals (the caller re-reads the slot from them).
// A merge of two sorted lists: a slot holds up to thousands of edges and
// reads apply changes to many slots, so no edge is hashed or re-sorted.
func applyChanges(es []edge, changes []edgeCount) (out []edge, ok bool) {
	sorted := slices.Clone(changes)
	slices.SortFunc(sorted, func(a, b edgeCount) int { return compareEdges(a.edge, b.edge) })
	changes = sorted[:0] // copies of one edge as one change
	adds := 0
	for _, c := range sorted {
		if n := len(changes); n > 0 && changes[n-1].edge == c.edge {
			changes[n-1].count += c.count
		} else {
			changes = append(changes, c)
		}
		adds += int(max(c.count, 0))
	}
	out = make([]edge, 0, len(es)+adds)
	i := 0
	for _, c := range changes {
		j := i
		for j < len(es) && compareEdges(es[j], c.edge) < 0 {
			j++
		}
		out, i = append(out, es[i:j]...), j
		for k := c.count; k < 0; k++ {
			if i == len(es) || es[i] != c.edge {
				return nil, false
			}
			i++
		}
		for range c.count {
			out = append(out, c.edge)
		}
	}
	return append(out, es[i:]...), true
}

// compareEdges orders edges by instant, then delta (an end before a start
// at the same instant), as they are stored.
func compareEdges(a, b edge) int {
	switch {
	case a.at < b.at:
		return -1
	case a.at > b.at:
		return 1
	}
	return int(a.delta - b.delta)
}

// readSlotEdges reads the stored edges of slots; a slot without a row has
// none.
func readSlotEdges(ctx context.Context, tx pgx.Tx, slots []slotKey) (map[slotKey][]edge, error) {
	out := make(map[slotKey][]edge, len(slots))
	if len(slots) == 0 {
		return out, nil
	}
	proxies, starts := splitSlotKeys(slots)
	rows, err := tx.Query(ctx, slotEdges, proxies, starts)
	if err != nil {
		return nil, err
	}
	return out, scanSlotEdges(rows, out)
}

// slotEdges selects the stored edges of slots ($1 proxies, $2 slot starts).
const slotEdges = `
SELECT s.proxy_id, s.slot_start, s.packed_edges
  FROM unnest($1::text[], $2::timestamptz[]) AS k(proxy_id, slot_start)
  JOIN usage_peak_slots s ON s.proxy_id = k.proxy_id AND s.slot_start = k.slot_start`

func scanSlotEdges(rows pgx.Rows, out map[slotKey][]edge) error {
	var k slotKey
	var b []byte
	_, err := pgx.ForEachRow(rows, []any{&k.ProxyID, &k.Start, &b}, func() error {
		k.Start = k.Start.UTC()
		es, err := decodeEdges(k.Start, b)
		out[k] = es
		return err
	})
	return err
}

func splitSlotKeys(slots []slotKey) ([]string, []time.Time) {
	proxies, starts := make([]string, len(slots)), make([]time.Time, len(slots))
	for i, k := range slots {
		proxies[i], starts[i] = k.ProxyID, k.Start
	}
	return proxies, starts
}

// readIntervalEdges adds to slots the edges of the stored intervals within
// spans (an index range scan on start and one on end), each slot's sorted;
// skip leaves out the intervals of some connections.
func readIntervalEdges(ctx context.Context, tx pgx.Tx, spans []span, skip map[ConnKey]bool, slots map[slotKey][]edge) error {
	if len(spans) == 0 {
		return nil
	}
	proxies := make([]string, len(spans))
	los, his := make([]time.Time, len(spans)), make([]time.Time, len(spans))
	for i, s := range spans {
		proxies[i], los[i], his[i] = s.ProxyID, s.Lo, s.Hi
	}
	rows, err := tx.Query(ctx, `
		SELECT k.proxy_id, c.connection_id, c.start_time, 1
		  FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(proxy_id, lo, hi)
		  JOIN usage_connections c ON c.proxy_id = k.proxy_id AND c.start_time >= k.lo AND c.start_time < k.hi
		 WHERE c.start_time < c.end_time
		UNION ALL
		SELECT k.proxy_id, c.connection_id, c.end_time, -1
		  FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(proxy_id, lo, hi)
		  JOIN usage_connections c ON c.proxy_id = k.proxy_id AND c.end_time >= k.lo AND c.end_time < k.hi
		 WHERE c.start_time < c.end_time`, proxies, los, his)
	if err != nil {
		return err
	}
	touched := map[slotKey]bool{}
	var ck ConnKey
	var at time.Time
	var delta int32
	if _, err := pgx.ForEachRow(rows, []any{&ck.ProxyID, &ck.ConnectionID, &at, &delta}, func() error {
		if !skip[ck] {
			k := slotKey{ck.ProxyID, slotOf(at)}
			slots[k] = append(slots[k], edge{at.UnixMicro(), delta})
			touched[k] = true
		}
		return nil
	}); err != nil {
		return err
	}
	for k := range touched {
		sortEdges(slots[k])
	}
	return nil
}

// writeSlots replaces the stored slots within spans by slots (those with
// edges; the others are deleted).
func writeSlots(ctx context.Context, tx pgx.Tx, spans []span, slots map[slotKey][]edge) error {
	if len(spans) == 0 {
		return nil
	}
	proxies := make([]string, len(spans))
	los, his := make([]time.Time, len(spans)), make([]time.Time, len(spans))
	for i, s := range spans {
		proxies[i], los[i], his[i] = s.ProxyID, s.Lo, s.Hi
	}
	if _, err := tx.Exec(ctx, `
		DELETE FROM usage_peak_slots s USING unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(proxy_id, lo, hi)
		 WHERE s.proxy_id = k.proxy_id AND s.slot_start >= k.lo AND s.slot_start < k.hi`, proxies, los, his); err != nil {
		return err
	}
	var sProxies []string
	var sStarts []time.Time
	var nets, tops []int32
	var edges [][]byte
	for k, es := range slots {
		if len(es) == 0 {
			continue
		}
		b, err := encodeEdges(k.Start, es)
		if err != nil {
			return err
		}
		s := slotSummary(es)
		sProxies, sStarts = append(sProxies, k.ProxyID), append(sStarts, k.Start)
		nets, tops, edges = append(nets, s.net), append(tops, s.top), append(edges, b)
	}
	if len(sProxies) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO usage_peak_slots (proxy_id, slot_start, net, top, packed_edges)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[], $5::bytea[])`, sProxies, sStarts, nets, tops, edges)
	return err
}
