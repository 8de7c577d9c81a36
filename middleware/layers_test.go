package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

func TestRetryLayer(t *testing.T) {
	t.Parallel()
	mw, err := middleware.Retry(fastRetry())
	require.NoError(t, err)
	n := atomic.Int32{}
	_, err = mw(func(*message.Message) ([]*message.Message, error) {
		if n.Add(1) == 1 {
			panic("once")
		}
		return nil, nil
	})(msg("e", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(2), n.Load())

	n.Store(0)
	_, err = mw(func(*message.Message) ([]*message.Message, error) {
		n.Add(1)
		return nil, retry.Permanent(errors.New("no"))
	})(msg("e", "p"))
	require.Error(t, err)
	require.Equal(t, int32(1), n.Load(), "permanent errors are not retried")

	ctx, cancel := context.WithCancel(context.Background())
	m := msg("e", "p")
	m.SetContext(ctx)
	slow, err := middleware.Retry(retry.Policy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsed: -1})
	require.NoError(t, err)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err = slow(func(*message.Message) ([]*message.Message, error) { return nil, errors.New("x") })(m)
	require.ErrorIs(t, err, context.Canceled, "waits end on cancel")

	_, err = middleware.Retry(retry.Policy{Multiplier: 0.1})
	require.ErrorIs(t, err, middleware.ErrInvalidConfig)
}

func TestDeadLetterLayerWrapsRetry(t *testing.T) {
	t.Parallel()
	pub := newCapture()
	dl, err := middleware.DeadLetter(dlq.Config{Publisher: pub})
	require.NoError(t, err)
	rt, err := middleware.Retry(fastRetry())
	require.NoError(t, err)
	n := atomic.Int32{}
	h := dl(rt(func(*message.Message) ([]*message.Message, error) { n.Add(1); return nil, errors.New("always") }))
	_, err = h(msg("e", "p"))
	require.NoError(t, err, "acked once in the DLQ")
	require.Equal(t, int32(3), n.Load(), "retried before dead-lettering")
	got := pub.on("idempo.dlq")
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonRetriesExhausted, got[0].Metadata.Get(dlq.KeyReason))

	pub.fail.Store(1)
	_, err = h(msg("e2", "p"))
	require.ErrorIs(t, err, dlq.ErrPublish, "a failed DLQ publish nacks")

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	m3 := msg("e3", "p")
	m3.SetContext(cancelled)
	_, err = dl(func(*message.Message) ([]*message.Message, error) { return nil, context.Canceled })(m3)
	require.ErrorIs(t, err, context.Canceled, "cancellation (the message's context done) is never dead-lettered")
	require.Len(t, pub.on("idempo.dlq"), 1)

	_, err = dl(func(*message.Message) ([]*message.Message, error) { return nil, context.Canceled })(msg("e4", "p"))
	require.NoError(t, err, "a handler's own context.Canceled is a failure like any other")
	require.Len(t, pub.on("idempo.dlq"), 2)
}
