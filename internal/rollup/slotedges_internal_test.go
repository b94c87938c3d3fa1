package rollup

import (
	"slices"
	"testing"
)

// A slot's edges survive their byte form, and changes apply as a multiset:
// copies at one instant count, and removing an edge the slot does not hold
// is refused (the caller then re-reads the slot from the intervals).
func TestSlotEdgeChanges(t *testing.T) {
	es := []edge{{-5, 1}, {10, -1}, {10, 1}, {10, 1}, {1 << 40, -1}}
	back, err := decodeEdges(encodeEdges(es))
	if err != nil || !slices.Equal(back, es) {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	if _, err := decodeEdges(make([]byte, edgeBytes+1)); err == nil {
		t.Error("a partial edge decoded")
	}
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
