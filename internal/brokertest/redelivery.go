package brokertest

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// redeliveryDelays are the delay tiers of [DelayedRedelivery].
var redeliveryDelays = []time.Duration{300 * time.Millisecond, 600 * time.Millisecond}

const redeliveryHandler = "orders-h"

// RedeliveryTopics returns every topic [DelayedRedelivery] uses for topic:
// topic itself, its DLQ and the delay tiers' topics, so a broker can create
// (or clear) them first.
func RedeliveryTopics(topic string) []string {
	topics := []string{topic, dlq.DefaultTopic(topic, redeliveryHandler)}
	for _, d := range redeliveryDelays {
		topics = append(topics, topic+".retry."+d.String())
	}
	return topics
}

// DelayedRedelivery runs delayed redelivery end to end through a real
// router on a broker: a message that fails its in-process attempts goes
// through a delay topic, comes back through the DelayForwarder and is
// processed once; one that keeps failing goes through every tier and then
// to the DLQ. pub publishes to the broker; sub returns a fresh subscriber
// (one per handler, and one for the DLQ), closed by the test's cleanup.
func DelayedRedelivery(t *testing.T, topic string, pub message.Publisher, sub func() message.Subscriber) {
	t.Helper()
	topics := RedeliveryTopics(topic)
	dlqTopic, tierTopics := topics[1], topics[2:]

	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil), DLQ: dlq.Config{Publisher: pub}, Logger: slog.New(slog.DiscardHandler),
		Retry:      retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
		Redelivery: &middleware.Redelivery{Delays: redeliveryDelays},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })

	var recoverAttempts, poisonAttempts, recovered atomic.Int32
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler(redeliveryHandler, topic, sub(), func(m *message.Message) error {
		if m.UUID == "recovers" {
			// Fails both in-process attempts of the first delivery only.
			if recoverAttempts.Add(1) <= 2 {
				return errors.New("downstream unavailable")
			}
			recovered.Add(1)
			return nil
		}
		poisonAttempts.Add(1)
		return errors.New("always")
	}).AddMiddleware(stack.Middleware)
	for i, tt := range tierTopics {
		router.AddConsumerHandler("forward-"+redeliveryDelays[i].String(), tt, sub(), middleware.DelayForwarder(pub))
	}
	dctx, dcancel := context.WithCancel(context.Background())
	t.Cleanup(dcancel)
	dead, err := sub().Subscribe(dctx, dlqTopic)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stopped := make(chan struct{})
	go func() { _ = router.Run(ctx); close(stopped) }()
	t.Cleanup(func() {
		_ = router.Close()
		select {
		case <-stopped:
		case <-time.After(time.Minute):
			t.Error("the router did not stop within a minute")
		}
	})
	select {
	case <-router.Running():
	case <-time.After(time.Minute):
		t.Fatal("the router did not start within a minute")
	}

	require.NoError(t, pub.Publish(topic, message.NewMessage("recovers", []byte("r")), message.NewMessage("poison", []byte("p"))))
	var got *message.Message
	select {
	case m, ok := <-dead:
		require.True(t, ok, "the DLQ subscription closed before a dead letter came")
		m.Ack()
		got = m
	case <-time.After(2 * time.Minute):
		t.Fatal("the poison message did not reach the DLQ within 2 minutes")
	}
	require.Equal(t, "poison", got.Metadata.Get(dlqmeta.KeyOriginalUUID))
	require.Equal(t, dlq.ReasonRetriesExhausted, got.Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, "2", got.Metadata.Get("idempo_redelivery_tier"), "it went through both tiers first")
	require.Equal(t, "3", got.Metadata.Get(dlqmeta.KeyDeliveries))
	require.Equal(t, int32(6), poisonAttempts.Load(), "2 attempts per delivery × 3 deliveries")
	require.Eventually(t, func() bool { return recovered.Load() == 1 }, time.Minute, 10*time.Millisecond,
		"the recovering message was not processed after its delay tier")
	require.Eventually(t, func() bool { st := stack.Stats(); return st.Processed == 1 && st.DeadLettered == 1 }, time.Minute, 10*time.Millisecond,
		"the stack did not settle both messages")
	require.Equal(t, int32(3), recoverAttempts.Load(), "2 failed attempts, then 1 after the tier")
	st := stack.Stats()
	require.Equal(t, int64(3), st.Redelivered, "two tiers for the poison message, one for the other")
	require.Equal(t, int64(1), st.Processed)
	require.Equal(t, int64(1), st.DeadLettered)
}
