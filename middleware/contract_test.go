package middleware_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Retention covers the horizon: New rejects a Retention that covers the
// lease but not the retry window, or not the delayed-redelivery delays too,
// naming the field; one that covers all of them is accepted.
func TestRetentionMustCoverRetriesAndRedelivery(t *testing.T) {
	t.Parallel()
	policy := retry.Policy{InitialInterval: time.Minute, MaxInterval: time.Minute, MaxAttempts: 3, MaxElapsed: -1}
	window := policy.MaxTotalWait()
	require.Greater(t, window, 2*time.Minute, "the retry window is the test's premise")
	const lease = time.Second
	delays := []time.Duration{10 * time.Minute, time.Hour}
	tiers := delays[0] + delays[1]
	cfg := func(retention time.Duration, redelivery bool) middleware.Config {
		c := middleware.Config{
			Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}, Logger: quiet,
			Lease: lease, Retry: policy, Retention: retention,
		}
		if redelivery {
			c.Redelivery = &middleware.Redelivery{Delays: delays}
		}
		return c
	}
	newStack := func(c middleware.Config) error {
		s, err := middleware.New(c)
		if err == nil {
			require.NoError(t, s.Close())
		}
		return err
	}

	// Covers the lease, not the retry window.
	err := newStack(cfg(10*lease, false))
	require.ErrorIs(t, err, middleware.ErrInvalidConfig)
	require.ErrorContains(t, err, "Retention")
	require.Contains(t, strings.ToLower(err.Error()), "retry", "the error says what Retention must cover")

	// Covers the lease and the retry window, not the redelivery delays.
	err = newStack(cfg(window+lease+time.Minute, true))
	require.ErrorIs(t, err, middleware.ErrInvalidConfig, "a Retention shorter than the redelivery delays must be rejected")
	require.ErrorContains(t, err, "Retention")
	require.Contains(t, strings.ToLower(err.Error()), "redelivery", "the error says what Retention must cover")

	// Covers the delays but not the retry window and the lease on top.
	err = newStack(cfg(tiers, true))
	require.ErrorIs(t, err, middleware.ErrInvalidConfig)
	require.ErrorContains(t, err, "Retention")

	// Covers everything.
	require.NoError(t, newStack(cfg(window+lease, false)))
	require.NoError(t, newStack(cfg(window+lease+tiers, true)))
}

// Row "handler outputs": a handler returning messages without an output
// publisher is a permanent error naming the missing option: dead-lettered,
// never acked with its outputs dropped, never recorded as done.
func TestOutputsWithoutPublisherAreDeadLettered(t *testing.T) {
	t.Parallel()
	withOutputs := func(*message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage("o1", []byte("out"))}, nil
	}
	check := func(t *testing.T, b *bundle, status func() dedup.Status) {
		t.Helper()
		err := b.runWithin(t, 30*time.Second, withOutputs, msg("e1", "p"))
		require.NoError(t, err, "acked once the copy is in the DLQ")
		require.Equal(t, int32(1), b.calls.Load(), "a permanent error is not retried")
		got := b.dlq.on(dlqTopic)
		require.Len(t, got, 1, "the message is dead-lettered, not acked with its outputs dropped")
		require.Equal(t, dlq.ReasonPermanent, got[0].Metadata.Get(dlqmeta.KeyReason))
		require.Contains(t, got[0].Metadata.Get(dlqmeta.KeyError), "OutputPublisher", "the error names the missing option")
		require.Zero(t, b.out.count())
		require.Zero(t, b.stack.Stats().Processed)
		require.Equal(t, dedup.StatusDeadLettered, status())
	}

	t.Run("claimed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *middleware.Config) { c.OutputPublisher = nil })
		check(t, b, func() dedup.Status { return claim(t, b.mem, "e1").Status })
	})

	t.Run("inbox", func(t *testing.T) {
		t.Parallel()
		db, err := sqlstore.OpenSQLite(filepath.Join(t.TempDir(), "outputs.db"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		st, err := sqlstore.New(db, nil)
		require.NoError(t, err)
		require.NoError(t, st.Migrate(context.Background()))
		b := setup(t, func(c *middleware.Config) {
			c.OutputPublisher = nil
			c.Store = st
			c.Transactional = true
		})
		check(t, b, func() dedup.Status { return claim(t, st, "e1").Status })
	})
}

// Row "over the delivery cap", counted per acquired claim: with
// MaxDeliveries = N the handler runs on the N-th claim and the (N+1)-th is
// dead-lettered with reason delivery_cap without running it.
func testDeliveryCapCountsClaims(t *testing.T) {
	t.Parallel()
	const n = 3
	b := setup(t, func(c *middleware.Config) { c.MaxDeliveries = n })
	b.out.fail.Store(1 << 30) // every delivery fails after its handler ran, counted
	h := func(*message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage("o", nil)}, nil
	}
	for i := 1; i <= n; i++ {
		err := b.runWithin(t, 30*time.Second, h, msg("e1", "p"))
		require.ErrorIs(t, err, middleware.ErrOutputPublish, "delivery %d", i)
		require.Equal(t, int32(i), b.calls.Load(), "the handler runs on claim %d of %d", i, n)
	}
	require.Zero(t, b.dlq.count())
	err := b.runWithin(t, 30*time.Second, h, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(n), b.calls.Load(), "the handler does not run past the cap")
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonDeliveryCap, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, strconv.Itoa(n+1), got[0].Metadata.Get(dlqmeta.KeyDeliveries))
	require.Equal(t, dedup.StatusDeadLettered, claim(t, b.mem, "e1").Status)
}

// Each trip through a delayed-redelivery tier is a delivery: with more tiers
// than MaxDeliveries allows, the cap dead-letters the message before the
// tiers run out.
func testDeliveryCapCountsRedeliveryTiers(t *testing.T) {
	t.Parallel()
	const n = 2
	tiers := newCapture()
	b := setup(t, func(c *middleware.Config) {
		c.MaxDeliveries = n
		c.Retention = 100 * time.Hour
		c.Redelivery = &middleware.Redelivery{Delays: []time.Duration{time.Hour, time.Hour, time.Hour}, Publisher: tiers}
	})
	failing := func(*message.Message) ([]*message.Message, error) { return nil, errors.New("downstream down") }
	attempts := int32(fastRetry().MaxAttempts)
	m := msg("e1", "p")
	for i := 1; i <= n; i++ {
		err := b.runWithin(t, 30*time.Second, failing, m)
		require.NoError(t, err, "acked once the delayed copy is published")
		require.Equal(t, int32(i)*attempts, b.calls.Load())
		copies := tiers.on(middleware.DefaultRedeliveryTopic("", i-1, time.Hour))
		require.Len(t, copies, i, "delivery %d went to a delay tier", i)
		m = copies[i-1]
		require.Equal(t, strconv.Itoa(i), m.Metadata.Get(middleware.KeyRedeliveryTier))
		m.SetContext(context.Background())
	}
	require.Zero(t, b.dlq.count())
	err := b.runWithin(t, 30*time.Second, failing, m)
	require.NoError(t, err)
	require.Equal(t, int32(n)*attempts, b.calls.Load(), "the handler does not run past the cap")
	require.Equal(t, n, tiers.count(), "no third tier")
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonDeliveryCap, got[0].Metadata.Get(dlqmeta.KeyReason), "each tier counted towards the cap")
	require.Equal(t, strconv.Itoa(n+1), got[0].Metadata.Get(dlqmeta.KeyDeliveries))
	require.Equal(t, dedup.StatusDeadLettered, claim(t, b.mem, "e1").Status)
}
