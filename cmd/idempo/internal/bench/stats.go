package bench

import (
	"math"
	"slices"
	"time"
)

// Summary holds order statistics of a set of durations.
type Summary struct {
	N             int
	P50, P99, Max time.Duration
}

// summarize sorts ds in place and returns its median, 99th percentile and
// maximum. The zero Summary describes an empty set.
func summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	slices.Sort(ds)
	return Summary{N: len(ds), P50: percentile(ds, 50), P99: percentile(ds, 99), Max: ds[len(ds)-1]}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values at
// or below it. It returns 0 for an empty slice; p outside (0, 100] is
// clamped to it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps float error from pushing an exact rank up one
	// (99.9/100 × 1000 is 999.0000000000001).
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	return sorted[min(max(rank, 1), n)-1]
}
