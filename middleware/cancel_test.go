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

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// A handler that returns context.Canceled while nothing is shutting down,
// through a real router on GoChannel (which redelivers a nacked message at
// once): it is retried like any failure and dead-lettered, not released and
// nacked in a loop (it once ran 200,000+ times in 5s).
func TestHandlersOwnCanceledDoesNotLoop(t *testing.T) {
	t.Parallel()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })
	dead := newCapture()
	stack, err := middleware.New(middleware.Config{
		Store: setup(t).mem, DLQ: dlq.Config{Publisher: dead}, Logger: quiet, Retention: time.Hour,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxAttempts: 3},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	var calls atomic.Int32
	router.AddConsumerHandler("cancels-itself", "orders", pubsub, func(*message.Message) error {
		calls.Add(1)
		return context.Canceled
	}).AddMiddleware(stack.Middleware)
	runRouter(t, router)
	require.NoError(t, pubsub.Publish("orders", message.NewMessage("order-1", []byte("x"))))
	waitDeadLetters(t, dead, "a handler returning its own context.Canceled")
	time.Sleep(200 * time.Millisecond) // room for a loop to show
	require.Equal(t, int32(3), calls.Load(), "three attempts (MaxAttempts), then the DLQ; no loop")
	copies := dead.on("orders.dlq")
	require.Len(t, copies, 1)
	require.Equal(t, dlq.ReasonRetriesExhausted, copies[0].Metadata.Get(dlqmeta.KeyReason))
}

// Every nack pauses NackDelay first, the lost-lease and cancellation paths
// included, so no broker that redelivers at once can spin; the pause ends at
// once when the message's context is done (shutdown).
func TestEveryNackPauses(t *testing.T) {
	t.Parallel()
	const pause = 300 * time.Millisecond
	failing := func(err error) message.HandlerFunc {
		return func(*message.Message) ([]*message.Message, error) { return nil, err }
	}
	cases := map[string]struct {
		prepare func(b *bundle)
		handler message.HandlerFunc
		want    error
	}{
		"store outage on claim": {
			prepare: func(b *bundle) { inject(&b.store.claimErr, errors.New("connection refused")) },
			handler: ok, want: middleware.ErrStore,
		},
		"lease lost": {
			handler: failing(dedup.ErrLeaseLost), want: dedup.ErrLeaseLost,
		},
		"dead-letter publish failed": {
			prepare: func(b *bundle) { b.dlq.fail.Store(1) },
			handler: failing(retry.Permanent(errors.New("poison"))), want: middleware.ErrDeadLetter,
		},
		"output publish failed": {
			prepare: func(b *bundle) { b.out.fail.Store(100) },
			handler: func(*message.Message) ([]*message.Message, error) {
				return []*message.Message{message.NewMessage("o", nil)}, nil
			},
			want: middleware.ErrOutputPublish,
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(cfg *middleware.Config) {
				cfg.NackDelay = pause
				cfg.Retry = retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 1}
			})
			if c.prepare != nil {
				c.prepare(b)
			}
			start := time.Now()
			err := within(t, 30*time.Second, name, func() error { _, err := b.run(c.handler, msg("e1", "p")); return err })
			require.ErrorIs(t, err, c.want)
			require.GreaterOrEqual(t, time.Since(start), pause, "nacked without the NackDelay pause")
		})
	}
	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(cfg *middleware.Config) { cfg.NackDelay = time.Hour })
		inject(&b.store.claimErr, errors.New("connection refused"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m := msg("e1", "p")
		m.SetContext(ctx)
		err := within(t, 30*time.Second, "a nack during shutdown (NackDelay 1h)", func() error { _, err := b.run(ok, m); return err })
		require.Error(t, err)
	})
}
