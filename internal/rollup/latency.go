package rollup

import (
	"math"
	"sort"
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

// Histogram counts latency samples per bucket.
type Histogram map[int16]int64

// Add merges o into h.
func (h Histogram) Add(o Histogram) {
	for k, n := range o {
		h[k] += n
	}
}

// Quantile returns the q-quantile (nearest rank: the sample at rank
// ceil(q·n)) in microseconds, within 1 % of the exact value, clamped to the
// known maximum. ok is false for an empty histogram.
func (h Histogram) Quantile(q float64, maxUS int64) (us float64, ok bool) {
	var n int64
	keys := make([]int16, 0, len(h))
	for k, c := range h {
		if c > 0 {
			keys = append(keys, k)
			n += c
		}
	}
	if n == 0 {
		return 0, false
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	rank := int64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen int64
	for _, k := range keys {
		seen += h[k]
		if seen >= rank {
			return min(bucketValue(k), float64(maxUS)), true
		}
	}
	return min(bucketValue(keys[len(keys)-1]), float64(maxUS)), true
}
