package bench

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func durations(from, to int) []time.Duration {
	var ds []time.Duration
	for i := from; i <= to; i++ {
		ds = append(ds, time.Duration(i))
	}
	return ds
}

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value, median", durations(7, 7), 50, 7},
		{"one value, p99", durations(7, 7), 99, 7},
		{"1..100 median", durations(1, 100), 50, 50},
		{"1..100 p99", durations(1, 100), 99, 99},
		{"1..100 p100", durations(1, 100), 100, 100},
		{"1..1000 p99", durations(1, 1000), 99, 990},
		{"1..1000 p99.9", durations(1, 1000), 99.9, 999},
		{"1..10 p99 rounds up to the last", durations(1, 10), 99, 10},
		{"1..10 median", durations(1, 10), 50, 5},
		{"1..3 median", durations(1, 3), 50, 2},
		{"p 0 clamps to the minimum", durations(1, 10), 0, 1},
		{"p above 100 clamps to the maximum", durations(1, 10), 150, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, percentile(tc.sorted, tc.p))
		})
	}
}

func TestSummarizeSortsAndReports(t *testing.T) {
	t.Parallel()
	ds := durations(1, 1000)
	rand.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	s := summarize(ds)
	require.Equal(t, Summary{N: 1000, P50: 500, P99: 990, Max: 1000}, s)
	require.IsNonDecreasing(t, ds, "summarize sorts in place")
	require.Equal(t, Summary{}, summarize(nil))
}

func TestVariantFinishDividesByMessages(t *testing.T) {
	t.Parallel()
	var v VariantResult
	v.add(1, roundFigures{messages: 1000, elapsed: 100 * time.Millisecond, mallocs: 50000, allocedBytes: 4_000_000})
	v.add(2, roundFigures{messages: 1000, elapsed: 300 * time.Millisecond, mallocs: 30000, allocedBytes: 2_000_000})
	v.finish([]time.Duration{3 * time.Microsecond, time.Microsecond, 2 * time.Microsecond})
	require.Equal(t, 2000, v.Messages)
	require.InDelta(t, 400, v.ElapsedMS, 1e-9)
	require.InDelta(t, 5000, v.EventsPerSec, 1e-9, "2000 messages in 0.4 s")
	require.InDelta(t, 200_000, v.NsPerMsg, 1e-9)
	require.InDelta(t, 40, v.AllocsPerMsg, 1e-9)
	require.InDelta(t, 3000, v.BytesPerMsg, 1e-9)
	require.InDelta(t, 2, v.P50US, 1e-9)
	require.InDelta(t, 3, v.P99US, 1e-9)
	require.Len(t, v.Rounds, 2)
	require.InDelta(t, 10000, v.Rounds[0].EventsPerSec, 1e-9)
	require.InDelta(t, 50, v.Rounds[0].AllocsPerMsg, 1e-9)
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 123456.6: "123,457", 1234567: "1,234,567", -1234: "-1,234"} {
		require.Equal(t, want, FormatCount(v), "%v", v)
	}
	for v, want := range map[float64]string{0.123: "0.1 µs", 8: "8.0 µs", 104: "104 µs", 1100: "1.1 ms", 32000: "32 ms", 2.5e6: "2.50 s"} {
		require.Equal(t, want, FormatUS(v), "%v", v)
	}
}
