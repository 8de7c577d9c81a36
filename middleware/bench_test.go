package middleware_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

// benchRouter pushes b.N unique messages through one GoChannel router
// handler wrapped by mws, sequentially, and reports ns per message.
func benchRouter(b *testing.B, mws func(pub message.Publisher) []message.HandlerMiddleware) {
	b.Helper()
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 4096}, watermill.NopLogger{})
	defer pubsub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	done := make(chan struct{})
	var target atomic.Int64
	h := router.AddConsumerHandler("bench", "bench", pubsub, func(*message.Message) error {
		if handled.Add(1) == target.Load() {
			close(done)
		}
		return nil
	})
	for _, mw := range mws(pubsub) {
		h.AddMiddleware(mw)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = router.Run(ctx) }()
	select {
	case <-router.Running():
	case <-time.After(time.Minute):
		b.Fatal("the router did not start within a minute")
	}
	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		msgs[i] = message.NewMessage("m-"+strconv.Itoa(i), []byte("payload"))
	}
	target.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for _, m := range msgs {
			_ = pubsub.Publish("bench", m)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("timed out")
	}
	b.StopTimer()
	_ = router.Close()
}

// BenchmarkRouter compares the per-message cost on one sequential GoChannel
// router: no middleware, Watermill's own Retry+PoisonQueue+Deduplicator
// (keyed by message UUID), and idempo's stack on memstore.
func BenchmarkRouter(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		benchRouter(b, func(message.Publisher) []message.HandlerMiddleware { return nil })
	})
	b.Run("watermill", func(b *testing.B) {
		benchRouter(b, func(pub message.Publisher) []message.HandlerMiddleware {
			poison, err := wmw.PoisonQueue(pub, "bench.poison")
			if err != nil {
				b.Fatal(err)
			}
			repo, err := wmw.NewMapExpiringKeyRepository(time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			dd := wmw.Deduplicator{KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil }, Repository: repo, Timeout: time.Second}
			retry := wmw.Retry{MaxRetries: 3, InitialInterval: time.Millisecond}
			return []message.HandlerMiddleware{poison, retry.Middleware, dd.Middleware}
		})
	})
	b.Run("idempo", func(b *testing.B) {
		var stack *middleware.Stack
		benchRouter(b, func(pub message.Publisher) []message.HandlerMiddleware {
			var err error
			stack, err = middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: pub}, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			return []message.HandlerMiddleware{stack.Middleware}
		})
		_ = stack.Close()
	})
}

// BenchmarkStackDirect measures the stack alone, without a router: claim,
// handler on a copy, complete, per message.
func BenchmarkStackDirect(b *testing.B) {
	stack, err := middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer stack.Close()
	h := stack.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
	msgs := make([]*message.Message, b.N)
	for i := range msgs {
		msgs[i] = msg("m-"+strconv.Itoa(i), "payload")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, m := range msgs {
		if _, err := h(m); err != nil {
			b.Fatal(err)
		}
	}
}
