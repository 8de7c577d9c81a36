package middleware_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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

// Delayed redelivery: after the in-process attempts, a message goes through
// each delay tier before the DLQ; one that recovers is processed once.
func TestDelayedRedeliveryTiersThenDLQ(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64}, watermill.NopLogger{})
	defer gc.Close()
	delays := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond}
	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil), DLQ: dlq.Config{Publisher: gc}, Logger: quiet,
		Retry:      retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
		Redelivery: &middleware.Redelivery{Delays: delays},
	})
	require.NoError(t, err)
	defer stack.Close()

	var recoverAttempts, poisonAttempts, recovered atomic.Int32
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler("orders-h", "orders", gc, func(m *message.Message) error {
		switch m.UUID {
		case "recovers":
			// Fails both in-process attempts of the first delivery and of tier 1.
			if recoverAttempts.Add(1) <= 4 {
				return errors.New("downstream unavailable")
			}
			recovered.Add(1)
			return nil
		default:
			poisonAttempts.Add(1)
			return errors.New("always")
		}
	}).AddMiddleware(stack.Middleware)
	for _, d := range delays {
		router.AddConsumerHandler("forward-"+d.String(), middleware.DefaultRedeliveryTopic("orders", 0, d), gc, middleware.DelayForwarder(gc))
	}
	dead, err := gc.Subscribe(context.Background(), "orders.dlq")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = router.Run(ctx); close(done) }()
	select {
	case <-router.Running():
	case <-time.After(30 * time.Second):
		t.Fatal("the router did not start within 30s")
	}

	require.NoError(t, gc.Publish("orders", message.NewMessage("recovers", nil), message.NewMessage("poison", nil)))
	var dl *message.Message
	select {
	case dl = <-dead:
		dl.Ack()
	case <-time.After(30 * time.Second):
		t.Fatal("the poison message never reached the DLQ")
	}
	require.Equal(t, "poison", dl.Metadata.Get(dlqmeta.KeyOriginalUUID))
	require.Equal(t, "2", dl.Metadata.Get(middleware.KeyRedeliveryTier), "it went through both tiers first")
	require.Equal(t, int32(6), poisonAttempts.Load(), "2 attempts per delivery × 3 deliveries")
	require.Eventually(t, func() bool { return recovered.Load() == 1 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, router.Close())
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the router did not stop within 30s")
	}
	require.Equal(t, int32(1), recovered.Load(), "processed once")
	require.Equal(t, int64(4), stack.Stats().Redelivered, "two tiers each for both events")
}

// Row "delayed redelivery": a failed publish to the delay tier is a nack
// with the delivery counted, never an ack; once the publisher is back, the
// event goes through the tier and is processed or dead-lettered.
func TestRedeliveryPublishFailureNacksCounted(t *testing.T) {
	t.Parallel()
	tiers := newCapture()
	b := setup(t, func(c *middleware.Config) {
		c.Retention = 100 * time.Hour
		c.Redelivery = &middleware.Redelivery{Delays: []time.Duration{time.Hour}, Publisher: tiers}
	})
	tierTopic := middleware.DefaultRedeliveryTopic("", 0, time.Hour)
	attempts := int32(fastRetry().MaxAttempts)
	var recovered atomic.Bool
	h := func(m *message.Message) ([]*message.Message, error) {
		if m.UUID == "recovers" && recovered.Load() {
			return nil, nil
		}
		return nil, errors.New("downstream down")
	}
	for i, id := range []string{"poison", "recovers"} {
		tiers.fail.Store(1)
		err := b.runWithin(t, 30*time.Second, h, msg(id, "p"))
		require.ErrorIs(t, err, middleware.ErrRedelivery, "%s: a failed delay-tier publish must nack, never ack", id)
		require.ErrorIs(t, err, errPublishDown)
		require.NotErrorIs(t, err, middleware.ErrDeadLetter, "the record is not due for the DLQ: the next delivery runs the handler")
		require.Len(t, tiers.on(tierTopic), i)
		require.Zero(t, b.dlq.count())

		// The broker redelivers; the publisher is back.
		err = b.runWithin(t, 30*time.Second, h, msg(id, "p"))
		require.NoError(t, err, "%s: acked once the delayed copy is published", id)
	}
	require.Equal(t, 4*attempts, b.calls.Load())
	copies := tiers.on(tierTopic)
	require.Len(t, copies, 2)
	require.Zero(t, b.stack.Stats().Processed)

	// The forwarder hands both copies back when due.
	recovered.Store(true)
	for _, c := range copies {
		c.SetContext(context.Background())
		require.NoError(t, b.runWithin(t, 30*time.Second, h, c))
	}
	require.Equal(t, int64(1), b.stack.Stats().Processed)
	require.Equal(t, dedup.StatusDone, claim(t, b.mem, "recovers").Status)
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, "poison", got[0].Metadata.Get(dlqmeta.KeyEventID))
	require.Equal(t, dlq.ReasonRetriesExhausted, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, "3", got[0].Metadata.Get(dlqmeta.KeyDeliveries), "the delivery whose delay-tier publish failed counted")
	require.Equal(t, dedup.StatusDeadLettered, claim(t, b.mem, "poison").Status)
}

// DelayForwarder never hands a copy back before its not-before time.
func TestDelayForwarderNeverEarly(t *testing.T) {
	t.Parallel()
	pub := newCapture()
	var mu sync.Mutex
	var published time.Time
	pub.before = func(string, ...*message.Message) {
		mu.Lock()
		published = time.Now().Round(0) // the wall clock, as the not-before time
		mu.Unlock()
	}
	fwd := middleware.DelayForwarder(pub)
	notBefore := time.Now().Add(time.Second).Round(0)
	m := msg("e1", "payload")
	m.Metadata.Set(middleware.KeyNotBefore, notBefore.UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(middleware.KeyReturnTopic, "orders")
	m.Metadata.Set("tenant", "acme")
	err := within(t, 30*time.Second, "the forwarder", func() error { return fwd(m) })
	require.NoError(t, err)
	got := pub.on("orders")
	require.Len(t, got, 1)
	mu.Lock()
	require.False(t, published.Before(notBefore), "forwarded at %v, before its not-before time %v", published, notBefore)
	mu.Unlock()
	require.Equal(t, "e1", got[0].UUID)
	require.Equal(t, "payload", string(got[0].Payload))
	require.Equal(t, "acme", got[0].Metadata.Get("tenant"))

	// Also when the not-before time is written in another zone.
	notBefore = time.Now().Add(500 * time.Millisecond).Round(0)
	m = msg("e2", "payload")
	m.Metadata.Set(middleware.KeyNotBefore, notBefore.In(time.FixedZone("", -7*3600)).Format(time.RFC3339Nano))
	m.Metadata.Set(middleware.KeyReturnTopic, "orders")
	require.NoError(t, within(t, 30*time.Second, "the forwarder", func() error { return fwd(m) }))
	require.Len(t, pub.on("orders"), 2)
	mu.Lock()
	require.False(t, published.Before(notBefore), "forwarded at %v, before its not-before time %v", published, notBefore)
	mu.Unlock()
}

// DelayForwarder nacks (returns the context's error) when the message's
// context ends while it waits, and publishes nothing.
func TestDelayForwarderNacksOnCancel(t *testing.T) {
	t.Parallel()
	pub := newCapture()
	fwd := middleware.DelayForwarder(pub)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := msg("e1", "p")
	m.SetContext(ctx)
	m.Metadata.Set(middleware.KeyNotBefore, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(middleware.KeyReturnTopic, "orders")
	time.AfterFunc(50*time.Millisecond, cancel)
	// A wait that ignored the context would last an hour.
	err := within(t, 30*time.Second, "the forwarder after its context ended", func() error { return fwd(m) })
	require.ErrorIs(t, err, context.Canceled, "an error, so the router nacks")
	require.Zero(t, pub.count(), "nothing forwarded early")
}
