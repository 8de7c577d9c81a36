package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/internal/progress"
	"github.com/idempo/idempo/middleware"
)

// A broker's touch attached to the message context (NATS JetStream's
// in-progress ack) is called after each lease extension while the handler
// runs, and never once the delivery is settled; a failing touch does not
// fail the delivery.
func TestLeaseKeeperTouchesTheBroker(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.Lease = time.Second })
	var touches, settled atomic.Int32
	var afterSettle atomic.Int32
	m := msg("touched", "p")
	m.SetContext(progress.Attach(context.Background(), func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the touch's context has no deadline")
		}
		if settled.Load() == 1 {
			afterSettle.Add(1)
		}
		if touches.Add(1) == 1 {
			return errors.New("broker busy") // logged, not fatal
		}
		return nil
	}))
	// The handler runs past two extensions (one every Lease/3).
	err := b.runWithin(t, 30*time.Second, func(*message.Message) ([]*message.Message, error) {
		deadline := time.Now().Add(20 * time.Second)
		for touches.Load() < 2 {
			if time.Now().After(deadline) {
				return nil, errors.New("the broker was not touched twice within 20s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil, nil
	}, m)
	settled.Store(1)
	require.NoError(t, err, "a failed touch must not fail the delivery")
	require.GreaterOrEqual(t, touches.Load(), int32(2))
	// Long enough for two more extensions, had the lease been kept.
	time.Sleep(800 * time.Millisecond)
	// One touch may have been under way as the delivery settled; a kept
	// lease would have made two more.
	require.LessOrEqual(t, afterSettle.Load(), int32(1), "the broker was touched after the delivery was settled")
	require.Equal(t, int64(1), b.stack.Stats().Processed)
}
