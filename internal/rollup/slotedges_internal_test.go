package rollup

import (
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func packedWords(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	return out
}

// A slot's edges survive their byte form, and changes apply as a multiset:
// copies at one instant count, and removing an edge the slot does not hold
// is refused (the caller then re-reads the slot from the intervals).
func TestSlotEdgeChanges(t *testing.T) {
	slot := time.Date(2026, 3, 1, 23, 55, 0, 0, time.UTC)
	last := slot.Add(slotWidth).UnixMicro() - 1
	es := []edge{{slot.UnixMicro(), -1}, {slot.UnixMicro(), 1}, {slot.UnixMicro() + 10, 1}, {last, -1}, {last, 1}}
	b, err := encodeEdges(slot, es)
	if err != nil || len(b) != len(es)*edgeBytes {
		t.Fatalf("encode: %d bytes, %v", len(b), err)
	}
	back, err := decodeEdges(slot, b)
	if err != nil || !slices.Equal(back, es) {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	if !slices.IsSortedFunc(packedWords(b), func(a, b uint32) int { return cmp.Compare(a, b) }) {
		t.Error("sorted edges packed into unsorted words")
	}
	for _, out := range []int64{slot.UnixMicro() - 1, last + 1} {
		if _, err := encodeEdges(slot, []edge{{out, 1}}); err == nil {
			t.Errorf("an edge %d µs from the slot's start packed", out-slot.UnixMicro())
		}
	}
	if _, err := decodeEdges(slot, make([]byte, edgeBytes+1)); err == nil {
		t.Error("a partial edge decoded")
	}
	es = []edge{{-5, 1}, {10, -1}, {10, 1}, {10, 1}, {1 << 40, -1}}
	got, ok := applyChanges(es, []edgeCount{{edge{10, 1}, -1}, {edge{7, 1}, 2}, {edge{1 << 40, -1}, -1}})
	want := []edge{{-5, 1}, {7, 1}, {7, 1}, {10, -1}, {10, 1}}
	if !ok || !slices.Equal(got, want) {
		t.Errorf("applied: %v %v, want %v", got, ok, want)
	}
	if _, ok := applyChanges(es, []edgeCount{{edge{10, 1}, -3}}); ok {
		t.Error("removed three copies of an edge held twice")
	}
	if _, ok := applyChanges(es, []edgeCount{{edge{11, -1}, -1}}); ok {
		t.Error("removed an edge not held")
	}
	// Running values 1, 3, 3, 2: an end and a start at one instant are one
	// step (never 4).
	if s := slotSummary(append(want, edge{20, -1})); s != (summary{net: 2, top: 3}) {
		t.Errorf("summary %+v", s)
	}
}

// applyChanges (a merge) agrees with applying the changes as a multiset
// by counting, on random slots and changes with repeated instants.
func TestApplyChangesMatchesCounting(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	randomEdge := func() edge { return edge{int64(rng.IntN(12)), int32(2*rng.IntN(2) - 1)} }
	for range 5000 {
		es := make([]edge, rng.IntN(20))
		for i := range es {
			es[i] = randomEdge()
		}
		sortEdges(es)
		changes := make([]edgeCount, rng.IntN(6))
		for i := range changes {
			changes[i] = edgeCount{randomEdge(), int32(rng.IntN(5) - 2)}
		}
		got, ok := applyChanges(es, changes)
		want, wantOK := countChanges(es, changes)
		if ok != wantOK || ok && !slices.Equal(got, want) {
			t.Fatalf("applyChanges(%v, %v) = %v, %v; want %v, %v", es, changes, got, ok, want, wantOK)
		}
	}
}

// countChanges is the reference: count each edge, add the changes, refuse
// a negative count, list the edges again in order.
func countChanges(es []edge, changes []edgeCount) ([]edge, bool) {
	counts := map[edge]int32{}
	for _, e := range es {
		counts[e]++
	}
	for _, c := range changes {
		counts[c.edge] += c.count
	}
	var out []edge
	for e, n := range counts {
		if n < 0 {
			return nil, false
		}
		for range n {
			out = append(out, e)
		}
	}
	sortEdges(out)
	return out, true
}
