package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
	"github.com/idempo/idempo/tracing"
)

// TestTraceContinues: the writer's span → the stored traceparent → the
// relay's publish span → the published message's metadata, which a
// consumer extracts.
func TestTraceContinues(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		sr := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		e := newEnv(t, d, func(o *outbox.Options) { o.TracerProvider = tp })
		ctx, business := tp.Tracer("test").Start(context.Background(), "business")
		m := msg("a", 1)
		tx, err := e.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, e.ob.Write(ctx, tx, "orders", m))
		require.NoError(t, tx.Commit())
		business.End()

		rec := &recorder{}
		_, stop := runRelay(t, e.ob, fast(rec))
		waitFor(t, 20*time.Second, "the row published", func() bool { return rec.unique() == 1 })
		stop()

		spans := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range sr.Ended() {
			spans[s.Name()] = s
		}
		write, publish := spans["orders outbox write"], spans["orders publish"]
		require.NotNil(t, write, "write span")
		require.NotNil(t, publish, "publish span")
		require.Equal(t, business.SpanContext().SpanID(), write.Parent().SpanID(), "write span is the business span's child")
		require.Equal(t, write.SpanContext().SpanID(), publish.Parent().SpanID(), "publish span continues the stored trace")
		require.Equal(t, trace.SpanKindProducer, publish.SpanKind())

		got := rec.snapshot()[0]
		consumer := trace.SpanContextFromContext(tracing.Extract(context.Background(), messageWith(got.md)))
		require.Equal(t, business.SpanContext().TraceID(), consumer.TraceID(), "the consumer continues the trace")
		require.Equal(t, publish.SpanContext().SpanID(), consumer.SpanID(), "from the publish span")
	})
}
