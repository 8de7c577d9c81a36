package demo

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOrderViolations(t *testing.T) {
	t.Parallel()
	none := func(int) bool { return false }
	first := make([]int64, 3*Keys)
	for i := range first {
		first[i] = int64(i + 1)
	}
	require.Zero(t, OrderViolations(first, none), "effects in publish order")

	// Event 0 (key 0) took effect after event Keys (key 0, next in line).
	first[0] = first[Keys] + 1
	require.Equal(t, 1, OrderViolations(first, none))
	require.Zero(t, OrderViolations(first, func(i int) bool { return i == 0 }), "excluded events do not count")

	// Events of other keys may interleave in any order.
	first[0] = 1
	first[1], first[2] = first[2], first[1]
	require.Zero(t, OrderViolations(first, none))

	// An event without an effect is skipped.
	first[Keys] = 0
	require.Zero(t, OrderViolations(first, none))
}
