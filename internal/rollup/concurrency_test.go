package rollup

import (
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

func at(h, m int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }

func TestPair(t *testing.T) {
	age := 24 * time.Hour
	cases := []struct {
		name   string
		events []ConnEvent
		want   []Interval
	}{
		{"start and end", []ConnEvent{{at(1, 0), true}, {at(2, 0), false}},
			[]Interval{{at(1, 0), at(2, 0), true}}},
		{"start without end closes after max age", []ConnEvent{{at(1, 0), true}},
			[]Interval{{at(1, 0), at(25, 0), false}}},
		{"end without start is ignored", []ConnEvent{{at(1, 0), false}}, []Interval{}},
		{"end before its start is not used", []ConnEvent{{at(2, 0), true}, {at(1, 0), false}},
			[]Interval{{at(2, 0), at(26, 0), false}}},
		{"reused id pairs in order", []ConnEvent{{at(3, 0), false}, {at(1, 0), true}, {at(4, 0), false}, {at(2, 0), true}},
			[]Interval{{at(1, 0), at(3, 0), true}, {at(2, 0), at(4, 0), true}}},
		{"end at the same instant pairs", []ConnEvent{{at(1, 0), true}, {at(1, 0), false}},
			[]Interval{{at(1, 0), at(1, 0), true}}},
		{"long paired connection stays open", []ConnEvent{{at(1, 0), true}, {at(24*5, 0), false}},
			[]Interval{{at(1, 0), at(120, 0), true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Pair(c.events, age)
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for i := range got {
				if !got[i].Start.Equal(c.want[i].Start) || !got[i].End.Equal(c.want[i].End) || got[i].Paired != c.want[i].Paired {
					t.Fatalf("interval %d = %v, want %v", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestPeak(t *testing.T) {
	iv := func(a, b time.Time) Interval { return Interval{Start: a, End: b} }
	cases := []struct {
		name string
		ivs  []Interval
		day  time.Time
		want int
	}{
		{"none", nil, t0, 0},
		{"overlap", []Interval{iv(at(1, 0), at(3, 0)), iv(at(2, 0), at(4, 0)), iv(at(5, 0), at(6, 0))}, t0, 2},
		{"end before start at equal instant", []Interval{iv(at(1, 0), at(2, 0)), iv(at(2, 0), at(3, 0))}, t0, 1},
		{"zero-length", []Interval{iv(at(1, 0), at(1, 0))}, t0, 0},
		{"across midnight counts on both days", []Interval{iv(at(23, 0), at(25, 0)), iv(at(24, 30), at(26, 0))}, t0.AddDate(0, 0, 1), 2},
		{"ending at midnight is not open next day", []Interval{iv(at(20, 0), at(24, 0))}, t0.AddDate(0, 0, 1), 0},
		{"starting at midnight belongs to that day", []Interval{iv(at(24, 0), at(25, 0))}, t0, 0},
		{"open all day", []Interval{iv(at(-30, 0), at(50, 0))}, t0, 1},
	}
	for _, c := range cases {
		if got := Peak(c.ivs, c.day); got != c.want {
			t.Errorf("%s: peak = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestIntervalDays(t *testing.T) {
	days := Interval{Start: at(23, 0), End: at(48, 0)}.Days()
	if len(days) != 2 || !days[0].Equal(t0) || !days[1].Equal(t0.AddDate(0, 0, 1)) {
		t.Fatalf("days = %v", days)
	}
}

func TestLatencyHistogram(t *testing.T) {
	for _, us := range []int64{0, 1, 2, 3, 999, 1000, 1001, 12_345, 86_400_000_000} {
		k := LatencyBucket(us)
		v := bucketValue(k)
		if us == 0 {
			if v != 0 {
				t.Fatalf("0 µs → %v", v)
			}
			continue
		}
		if rel := (v - float64(us)) / float64(us); rel > 0.01 || rel < -0.01 {
			t.Errorf("%d µs in bucket %d valued %v: relative error %v", us, k, v, rel)
		}
	}
	// Added out of order, and merged from two halves: the same histogram.
	var h, odd, even Histogram
	for i := int64(100); i >= 1; i-- {
		h.Inc(LatencyBucket(i*1000), 1)
		if i%2 == 1 {
			odd.Inc(LatencyBucket(i*1000), 1)
		} else {
			even.Inc(LatencyBucket(i*1000), 1)
		}
	}
	odd.Add(even)
	if !reflect.DeepEqual(h, odd) {
		t.Fatalf("merged %+v, built %+v", odd, h)
	}
	var total int64
	for _, c := range h.counts {
		total += c
	}
	if total != 100 || h.counts[0] == 0 || h.counts[len(h.counts)-1] == 0 {
		t.Fatalf("histogram %+v: %d samples, edges must be non-empty", h, total)
	}
	p95, ok := h.Quantile(0.95, 100_000)
	if !ok || p95 < 95_000*0.99 || p95 > 95_000*1.01 {
		t.Fatalf("p95 = %v, want ≈95000", p95)
	}
	if _, ok := (Histogram{}).Quantile(0.95, 0); ok {
		t.Fatal("empty histogram has a quantile")
	}
}

// The stored form round-trips, merges like Add, skips empty buckets and
// refuses bytes that are not one.
func TestHistogramBinary(t *testing.T) {
	var a, b, sum Histogram
	for i := int64(1); i <= 300; i++ {
		us := i * i * 37
		a.Inc(LatencyBucket(us), i)
		b.Inc(LatencyBucket(us/3+1), 1)
	}
	a.Inc(0, 2)
	sum.Add(a)
	sum.Add(b)

	var back Histogram
	if err := back.AddBinary(a.AppendBinary(nil)); err != nil || !reflect.DeepEqual(back, a) {
		t.Fatalf("round trip: %v, %+v want %+v", err, back, a)
	}
	if err := back.AddBinary(b.AppendBinary(nil)); err != nil || !reflect.DeepEqual(back, sum) {
		t.Fatalf("merged from bytes: %v, %+v want %+v", err, back, sum)
	}
	enc := a.AppendBinary(nil)
	nonEmpty := 0
	for _, c := range a.counts {
		if c != 0 {
			nonEmpty++
		}
	}
	if len(enc) != nonEmpty*histogramEntrySize {
		t.Fatalf("%d bytes for %d non-empty buckets", len(enc), nonEmpty)
	}
	if err := new(Histogram).AddBinary(nil); err != nil {
		t.Fatalf("empty: %v", err)
	}
	swapped := append(append([]byte{}, enc[10:20]...), enc[:10]...) // buckets out of order
	for name, bad := range map[string][]byte{
		"truncated": enc[:len(enc)-1], "descending": swapped, "repeated": append(append([]byte{}, enc[:10]...), enc[:10]...),
		"negative bucket": {0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1},
	} {
		if err := new(Histogram).AddBinary(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func BenchmarkPeak(b *testing.B) {
	ivs := make([]Interval, 10_000)
	for i := range ivs {
		s := t0.Add(time.Duration(i) * 8 * time.Second)
		ivs[i] = Interval{Start: s, End: s.Add(time.Duration(i%600) * time.Second)}
	}
	for b.Loop() {
		Peak(ivs, t0)
	}
}

// BenchmarkHistogramReport is a 30-day report's latency work for 10
// proxies: 300 proxy-day histograms of ~40 buckets merged into 30 days and
// a total, each asked for its p95.
func BenchmarkHistogramReport(b *testing.B) {
	days := make([]Histogram, 300)
	for i := range days {
		for j := range 50 {
			days[i].Inc(LatencyBucket(int64(20_000+(i*37+j*911)%30_000)), 1)
		}
	}
	for b.Loop() {
		var total Histogram
		for d := range 30 {
			var day Histogram
			for p := range 10 {
				day.Add(days[d*10+p])
			}
			day.Quantile(0.95, 1<<40)
			total.Add(day)
		}
		total.Quantile(0.95, 1<<40)
	}
}

// daysWithin must yield exactly Days() clipped to the range, whatever the
// interval's length or position (reference: filter the full list).
func TestIntervalDaysWithin(t *testing.T) {
	from, to := t0.AddDate(0, 0, -3), t0.AddDate(0, 0, 4)
	hours := []int{-24 * 400, -24 * 4, -75, -1, 0, 1, 23, 24, 25, 24 * 3, 24 * 7, 24*8 + 5, 24 * 30}
	for _, a := range hours {
		for _, b := range hours {
			iv := Interval{Start: t0.Add(time.Duration(a) * time.Hour), End: t0.Add(time.Duration(b) * time.Hour)}
			var want []time.Time
			for _, d := range iv.Days() {
				if !d.Before(from) && !d.After(to) {
					want = append(want, d)
				}
			}
			var got []time.Time
			for d := range iv.daysWithin(from, to) {
				got = append(got, d)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%v..%v: got %v, want %v", iv.Start, iv.End, got, want)
			}
		}
	}
}
