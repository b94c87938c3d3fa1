package rollup

import (
	"encoding/binary"
	"errors"
	"math"
)

// Latency percentiles come from a log-scale histogram that merges by
// addition, so days, proxies and backends combine exactly: bucket 0 holds
// 0 µs, bucket k ≥ 1 holds (γ^(k-2), γ^(k-1)] µs with γ = 1.02, and its
// representative value is within 1 % of every sample in it.
const latencyGamma = 1.02

var logGamma = math.Log(latencyGamma)

// LatencyBucket returns the histogram bucket of a latency in microseconds.
func LatencyBucket(us int64) int16 {
	if us <= 0 {
		return 0
	}
	k := int(math.Ceil(math.Log(float64(us))/logGamma)) + 1
	// Guard against floating error at exact powers of γ.
	for k > 1 && math.Pow(latencyGamma, float64(k-2)) >= float64(us) {
		k--
	}
	for math.Pow(latencyGamma, float64(k-1)) < float64(us) {
		k++
	}
	return int16(k)
}

// bucketValue is the representative latency (µs) of bucket k: the point
// with equal relative distance to both bounds.
func bucketValue(k int16) float64 {
	if k <= 0 {
		return 0
	}
	hi := math.Pow(latencyGamma, float64(k-1))
	return 2 * hi / (1 + latencyGamma)
}

// Histogram counts latency samples per bucket, densely from its lowest
// non-empty bucket to its highest: a proxy-day's samples fall in a band
// of buckets, and merging or reading a slice is several times cheaper
// than a map (profile of the read benchmark). The zero value is empty;
// the layout is canonical, so equal histograms are reflect.DeepEqual.
type Histogram struct {
	lo     int16   // bucket of counts[0]
	counts []int64 // counts[i] samples in bucket lo+i
}

// Inc adds n samples to bucket k.
func (h *Histogram) Inc(k int16, n int64) {
	if n == 0 {
		return
	}
	h.cover(k, k)
	h.counts[k-h.lo] += n
}

// Add merges o into h.
func (h *Histogram) Add(o Histogram) {
	if len(o.counts) == 0 {
		return
	}
	h.cover(o.lo, o.lo+int16(len(o.counts)-1))
	off := int(o.lo - h.lo)
	for i, n := range o.counts {
		h.counts[off+i] += n
	}
}

// histogramEntrySize is the bytes of one bucket of a stored histogram.
const histogramEntrySize = 10

// AppendBinary appends h as usage_latency_daily_packed stores it
// (sql/0017_histogram_bytes.sql): for each non-empty bucket, in ascending
// order, the bucket as a big-endian int16 and its samples as a big-endian
// int64. Equal histograms give equal bytes.
func (h Histogram) AppendBinary(b []byte) []byte {
	for i, n := range h.counts {
		if n != 0 {
			b = binary.BigEndian.AppendUint16(b, uint16(h.lo+int16(i)))
			b = binary.BigEndian.AppendUint64(b, uint64(n))
		}
	}
	return b
}

var errStoredHistogram = errors.New("rollup: malformed stored latency histogram")

// AddBinary merges a histogram in its stored form (AppendBinary) into h.
func (h *Histogram) AddBinary(b []byte) error {
	if len(b)%histogramEntrySize != 0 {
		return errStoredHistogram
	}
	n := len(b) / histogramEntrySize
	if n == 0 {
		return nil
	}
	bucket := func(i int) int16 { return int16(binary.BigEndian.Uint16(b[i*histogramEntrySize:])) }
	lo, hi := bucket(0), bucket(n-1)
	if lo < 0 || hi < lo {
		return errStoredHistogram
	}
	h.cover(lo, hi) // buckets ascend: one widening for all
	prev := lo - 1
	for i := range n {
		k := bucket(i)
		if k <= prev || k > hi {
			return errStoredHistogram
		}
		prev = k
		h.counts[k-h.lo] += int64(binary.BigEndian.Uint64(b[i*histogramEntrySize+2:]))
	}
	return nil
}

// cover widens h to span buckets lo..hi.
func (h *Histogram) cover(lo, hi int16) {
	if len(h.counts) == 0 {
		h.lo, h.counts = lo, make([]int64, int(hi-lo)+1)
		return
	}
	if lo < h.lo {
		grown := make([]int64, int(h.lo-lo)+len(h.counts))
		copy(grown[h.lo-lo:], h.counts)
		h.lo, h.counts = lo, grown
	}
	if need := int(hi-h.lo) + 1; need > len(h.counts) {
		h.counts = append(h.counts, make([]int64, need-len(h.counts))...)
	}
}

// Quantile returns the q-quantile (nearest rank: the sample at rank
// ceil(q·n)) in microseconds, within 1 % of the exact value, clamped to the
// known maximum. ok is false for an empty histogram.
func (h Histogram) Quantile(q float64, maxUS int64) (us float64, ok bool) {
	var n int64
	for _, c := range h.counts {
		n += c
	}
	if n == 0 {
		return 0, false
	}
	rank := max(int64(math.Ceil(q*float64(n))), 1)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(h.lo+int16(i)), float64(maxUS)), true
		}
	}
	return min(bucketValue(h.lo+int16(len(h.counts)-1)), float64(maxUS)), true
}
