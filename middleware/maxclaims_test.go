package middleware_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/middleware"
)

// smallPool is a store that can serve two claims at once.
type smallPool struct{ *faulty }

func (smallPool) ClaimCapacity() int { return 2 }

// The stack holds no more claims at once than the store's ClaimCapacity:
// the third delivery waits for a slot, and one whose context ends while it
// waits is nacked as cancelled. MaxClaims -1 lifts the bound.
func TestMaxClaimsFollowsTheStore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		max  int
		want int32
	}{{"store capacity", 0, 2}, {"no bound", -1, 6}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *middleware.Config) {
				c.Store = smallPool{c.Store.(*faulty)}
				c.MaxClaims = tc.max
			})
			var running, most atomic.Int32
			release := make(chan struct{})
			h := func(*message.Message) ([]*message.Message, error) {
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				<-release
				running.Add(-1)
				return nil, nil
			}
			var wg sync.WaitGroup
			for i := range 6 {
				wg.Go(func() { _, _ = b.run(h, msg("ev-"+strconv.Itoa(i), "x")) })
			}
			within(t, 10*time.Second, "handlers starting", func() struct{} {
				for running.Load() < tc.want {
					time.Sleep(time.Millisecond)
				}
				return struct{}{}
			})
			time.Sleep(200 * time.Millisecond) // room for a handler past the bound
			require.Equal(t, tc.want, running.Load(), "handlers running at once")

			if tc.max == 0 {
				ctx, cancel := context.WithCancel(context.Background())
				waiting := msg("ev-waiting", "x")
				waiting.SetContext(ctx)
				cancel()
				_, err := b.run(h, waiting)
				require.True(t, errors.Is(err, middleware.ErrCancelled), "a delivery cancelled while waiting for a slot: %v", err)
			}
			close(release)
			waitGroup(t, &wg, 10*time.Second, "the deliveries")
			require.Equal(t, tc.want, most.Load())
		})
	}
}
