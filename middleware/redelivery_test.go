package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
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
		Store: memstore.New(nil), DLQPublisher: gc, Logger: quiet,
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
	<-router.Running()

	require.NoError(t, gc.Publish("orders", message.NewMessage("recovers", nil), message.NewMessage("poison", nil)))
	var dl *message.Message
	select {
	case dl = <-dead:
		dl.Ack()
	case <-time.After(30 * time.Second):
		t.Fatal("the poison message never reached the DLQ")
	}
	require.Equal(t, "poison", dl.Metadata.Get(dlq.KeyOriginalUUID))
	require.Equal(t, "2", dl.Metadata.Get(middleware.KeyRedeliveryTier), "it went through both tiers first")
	require.Equal(t, int32(6), poisonAttempts.Load(), "2 attempts per delivery × 3 deliveries")
	require.Eventually(t, func() bool { return recovered.Load() == 1 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, router.Close())
	<-done
	require.Equal(t, int32(1), recovered.Load(), "processed once")
	require.Equal(t, int64(4), stack.Stats().Redelivered, "two tiers each for both events")
}
