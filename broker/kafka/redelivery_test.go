package kafka_test

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

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Delayed redelivery end to end on Kafka, through a real router: a message
// that fails its in-process attempts goes through a delay topic, comes back
// through the DelayForwarder and is processed once; one that keeps failing
// goes through every tier and then to the DLQ.
func TestDelayedRedeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	topic := uniqueName("orders")
	delays := []time.Duration{300 * time.Millisecond, 600 * time.Millisecond}
	tierTopics := make([]string, len(delays))
	for i, d := range delays {
		tierTopics[i] = middleware.DefaultRedeliveryTopic(topic, i, d)
	}
	dlqTopic := dlq.DefaultTopic(topic, "orders-h")
	e := startEmbedded(t, kafka.EmbeddedConfig{Topics: append([]string{topic, dlqTopic}, tierTopics...)})
	pub := newPublisher(t, e.Config(""))
	sub := func() message.Subscriber {
		s, err := kafka.NewSubscriber(e.Config(uniqueName("group")), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() }) // the router closes it too
		return s
	}

	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil), DLQ: dlq.Config{Publisher: pub}, Logger: slog.New(slog.DiscardHandler),
		Retry:      retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
		Redelivery: &middleware.Redelivery{Delays: delays},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })

	var recoverAttempts, poisonAttempts, recovered atomic.Int32
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler("orders-h", topic, sub(), func(m *message.Message) error {
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
		router.AddConsumerHandler("forward-"+delays[i].String(), tt, sub(), middleware.DelayForwarder(pub))
	}
	dead := subscribe(t, sub(), dlqTopic)

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
	got := receive(t, dead, 1, 2*time.Minute)[0]
	require.Equal(t, "poison", got.Metadata.Get(dlq.KeyOriginalUUID))
	require.Equal(t, dlq.ReasonRetriesExhausted, got.Metadata.Get(dlq.KeyReason))
	require.Equal(t, "2", got.Metadata.Get(middleware.KeyRedeliveryTier), "it went through both tiers first")
	require.Equal(t, "3", got.Metadata.Get(dlq.KeyDeliveries))
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
