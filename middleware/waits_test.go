package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Row "acquired": the lease is kept during backoff waits too. When it is
// lost (another owner took the record) or runs out (the store cannot extend
// it) while the stack waits an hour before the next attempt, the message is
// nacked soon after, not when the wait ends, and the handler is not called
// again: another owner may be running it.
func TestLeaseLostDuringBackoffNacksAtOnce(t *testing.T) {
	t.Parallel()
	for name, extendErr := range map[string]error{
		"lost":     fmt.Errorf("taken over: %w", dedup.ErrLeaseLost),
		"runs out": errors.New("store unreachable"),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *middleware.Config) {
				c.Lease = time.Second // first extension after about 333 ms
				c.Retry = retry.Policy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxAttempts: 3, MaxElapsed: -1}
				c.Retention = 100 * time.Hour
			})
			h := func(*message.Message) ([]*message.Message, error) {
				// From the first backoff wait on, the lease cannot be extended.
				inject(&b.store.extendErr, extendErr)
				return nil, errors.New("transient")
			}
			// The backoff is an hour: only the lost lease can end it in time.
			err := b.runWithin(t, 30*time.Second, h, msg("e1", "p"))
			require.ErrorIs(t, err, dedup.ErrLeaseLost, "nacked as a lost lease")
			require.Equal(t, int32(1), b.calls.Load(), "the handler is not called again after the lease is lost")
			st := b.stack.Stats()
			require.Equal(t, int64(1), st.LeaseLost)
			require.Zero(t, st.Processed)
			require.Zero(t, b.dlq.count(), "a lost lease is not a poison message")
		})
	}
}

// Row "in progress elsewhere": the nack waits NackDelay, but no longer than
// the other owner's remaining lease, after which the redelivery can claim.
func TestInProgressNackWaitsAtMostTheOtherLease(t *testing.T) {
	t.Parallel()
	const nackDelay = 10 * time.Second
	b := setup(t, func(c *middleware.Config) { c.NackDelay = nackDelay })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // ends the stack's wait if the test fails first
	claimed := time.Now()
	other, err := b.mem.Claim(ctx, key("e1"), dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Second, Retention: time.Hour})
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, other.Status)

	m := msg("e1", "p")
	m.SetContext(ctx)
	// Generous bounds: well before NackDelay, and not before most of the
	// other owner's second has passed.
	err = within(t, nackDelay*3/4, "the in-progress nack (it waited for NackDelay, not for the other owner's remaining lease of about 1s)", func() error {
		_, err := b.run(ok, m)
		return err
	})
	require.ErrorIs(t, err, middleware.ErrInProgressElsewhere)
	require.GreaterOrEqual(t, time.Since(claimed), 500*time.Millisecond,
		"the in-progress nack did not wait for the other owner's lease: the redelivery would spin")
	require.Zero(t, b.calls.Load())
}
