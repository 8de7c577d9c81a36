package middleware_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// A replay marker too long for any store (a foreign producer's header) is
// dead-lettered as malformed, not nacked forever as a store outage.
func TestOversizedReplayIDIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := msg("e1", "p")
	m.Metadata.Set(dlqmeta.KeyReplayID, strings.Repeat("r", dedup.MaxReplayIDLen+1))
	_, err := b.run(ok, m)
	require.NoError(t, err, "acked once in the DLQ")
	require.Zero(t, b.calls.Load())
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonMalformed, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.Contains(t, got[0].Metadata.Get(dlqmeta.KeyError), dlqmeta.KeyReplayID)
}

// A claim the store refuses as an invalid request would be refused on every
// redelivery: it is dead-lettered, not nacked as an outage.
func TestClaimRefusedAsInvalidIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inject(&b.store.claimErr, fmt.Errorf("%w: ReplayID is too long", dedup.ErrInvalidRequest))
	_, err := b.run(ok, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, 1, b.dlq.count())
	require.Equal(t, dlq.ReasonMalformed, b.dlq.on(dlqTopic)[0].Metadata.Get(dlqmeta.KeyReason))
}

// A Scope no key can hold is refused by New; a router handler's name that
// cannot be a scope dead-letters with its own reason, not as the event ID's
// fault.
func TestInvalidScope(t *testing.T) {
	t.Parallel()
	for _, scope := range []string{"a\x00b", "\xff", strings.Repeat("s", dedup.MaxScopeLen+1)} {
		_, err := middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}, Scope: scope})
		require.ErrorIs(t, err, middleware.ErrInvalidConfig, "scope %q", scope)
		require.ErrorContains(t, err, "Scope")
	}

	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })
	dead := newCapture()
	stack, err := middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: dead}, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler(strings.Repeat("h", dedup.MaxScopeLen+1), "orders", pubsub, func(*message.Message) error { return nil }).
		AddMiddleware(stack.Middleware)
	runRouter(t, router)
	require.NoError(t, pubsub.Publish("orders", message.NewMessage("e1", []byte("p"))))
	waitDeadLetters(t, dead, "a handler name that cannot be a scope")
	require.Equal(t, dlq.ReasonInvalidScope, dead.on("orders.dlq")[0].Metadata.Get(dlqmeta.KeyReason))
}

// The retention check cannot be fooled by durations that overflow when
// added, and New answers at once whatever MaxAttempts is.
func TestRetentionCheckAtTheBounds(t *testing.T) {
	t.Parallel()
	base := func() middleware.Config {
		return middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}}
	}
	c := base()
	c.Lease = math.MaxInt64
	require.ErrorContains(t, c.Validate(), "Retention", "a lease longer than the 7-day retention")
	c = base()
	c.Redelivery = &middleware.Redelivery{Delays: []time.Duration{math.MaxInt64, math.MaxInt64}}
	require.ErrorContains(t, c.Validate(), "Retention", "delays that overflow when summed")

	// As many attempts as fit in a minute: bounded by MaxElapsed.
	c = base()
	c.Retry = retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxAttempts: math.MaxInt, MaxElapsed: time.Minute}
	err := within(t, 10*time.Second, "Validate with MaxAttempts = MaxInt", c.Validate)
	require.NoError(t, err)
	c.Retry = retry.Policy{InitialInterval: 10 * time.Second, MaxInterval: 10 * time.Second, MaxAttempts: math.MaxInt, MaxElapsed: time.Minute}
	require.NoError(t, c.Validate(), "MaxElapsed bounds the window before it saturates")
}

// An event ID of 257 to 4096 bytes is stored whole for dedup, and carried
// shortened on its dead-letter copy like a longer one.
func TestLongValidEventIDShortenedOnCopy(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.EventID = dedup.Metadata("id") })
	m := msg("u1", "p")
	m.Metadata.Set("id", strings.Repeat("y", dedup.MaxIDLen))
	_, err := b.run(func(*message.Message) ([]*message.Message, error) { return nil, retry.Permanent(errPublishDown) }, m)
	require.NoError(t, err)
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonPermanent, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.LessOrEqual(t, len(got[0].Metadata.Get(dlqmeta.KeyEventID)), dlqmeta.MaxEventIDMetadata)
}
