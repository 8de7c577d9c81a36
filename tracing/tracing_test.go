package tracing_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
	"github.com/idempo/idempo/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// One trace runs from the publisher through every retry to the DLQ copy.
func TestTraceFromPublishThroughRetriesToDLQ(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16}, watermill.NopLogger{})
	defer gc.Close()
	stack, err := middleware.New(middleware.Config{
		Store:          memstore.New(nil),
		DLQ:            dlq.Config{Publisher: gc},
		TracerProvider: tp,
		Retry:          retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxAttempts: 3},
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	defer stack.Close()

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	attemptTraces := make(chan trace.TraceID, 8)
	router.AddConsumerHandler("orders-handler", "orders", gc, func(m *message.Message) error {
		attemptTraces <- trace.SpanContextFromContext(m.Context()).TraceID()
		return errors.New("always fails")
	}).AddMiddleware(stack.Middleware)
	dlqCh, err := gc.Subscribe(context.Background(), "orders.dlq")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = router.Run(ctx); close(done) }()
	<-router.Running()

	pub := tracing.NewPublisher(gc, tp)
	pctx, root := tp.Tracer("test").Start(context.Background(), "checkout")
	msg := message.NewMessage("order-1", []byte("{}"))
	msg.SetContext(pctx)
	require.NoError(t, pub.Publish("orders", msg))
	root.End()
	want := root.SpanContext().TraceID()

	var dead *message.Message
	select {
	case dead = <-dlqCh:
		dead.Ack()
	case <-time.After(30 * time.Second):
		t.Fatal("no dead letter")
	}
	require.NoError(t, router.Close())
	<-done

	close(attemptTraces)
	n := 0
	for id := range attemptTraces {
		require.Equal(t, want, id, "the handler's context is in the publisher's trace")
		n++
	}
	require.Equal(t, 3, n)

	require.Equal(t, dlq.ReasonRetriesExhausted, dead.Metadata.Get(dlqmeta.KeyReason))
	dctx := tracing.Extract(context.Background(), dead)
	require.Equal(t, want, trace.SpanContextFromContext(dctx).TraceID(), "the dead letter links back to its trace")

	names := map[string]int{}
	for _, s := range rec.Ended() {
		require.Equal(t, want, s.SpanContext().TraceID(), "span %s", s.Name())
		names[s.Name()]++
	}
	require.Equal(t, 1, names["orders publish"])
	require.Equal(t, 1, names["orders process"])
	require.Equal(t, 3, names["idempo attempt"])
}

func TestInjectWithoutSpanChangesNothing(t *testing.T) {
	m := message.NewMessage("u", nil)
	tracing.Inject(context.Background(), m)
	require.Empty(t, m.Metadata)
}
