// Package tracing carries OpenTelemetry trace context through Watermill
// message metadata as W3C traceparent/tracestate, so one trace runs from the
// publisher through the consumer's attempts to the dead-letter copy.
//
// # Publishing
//
// Wrap a publisher with [NewPublisher]: each published message gets a
// producer span, child of the span in the message's context, and that span's
// context in its metadata.
//
// # Consuming
//
// Set middleware.Config.TracerProvider: the stack extracts the context with
// [Extract], opens a consumer span per delivery and a child span per handler
// attempt (the handler's context carries it), and the DLQ copy and handler
// outputs carry the delivery span's context.
package tracing

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName names idempo's tracer.
const InstrumentationName = "github.com/idempo/idempo"

var propagator = propagation.TraceContext{}

// Extract returns ctx with the remote span context carried in msg's metadata
// (traceparent), if any.
func Extract(ctx context.Context, msg *message.Message) context.Context {
	if msg.Metadata == nil {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(msg.Metadata))
}

// Inject writes the span context of ctx into msg's metadata. Without a valid
// span context in ctx it changes nothing.
func Inject(ctx context.Context, msg *message.Message) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	if msg.Metadata == nil {
		msg.Metadata = message.Metadata{}
	}
	propagator.Inject(ctx, propagation.MapCarrier(msg.Metadata))
}

// Publisher is a message.Publisher that traces each publish.
type Publisher struct {
	next   message.Publisher
	tracer trace.Tracer
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher wraps next so that every message is published inside a
// producer span ("<topic> publish") whose context is injected into the
// message's metadata. Safe for concurrent use if next is.
func NewPublisher(next message.Publisher, tp trace.TracerProvider) *Publisher {
	return &Publisher{next: next, tracer: tp.Tracer(InstrumentationName)}
}

// Publish implements message.Publisher.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	spans := make([]trace.Span, len(msgs))
	for i, m := range msgs {
		ctx, span := p.tracer.Start(m.Context(), topic+" publish",
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.destination.name", topic),
				attribute.String("messaging.message.id", m.UUID),
				attribute.String("messaging.system", "watermill"),
			))
		Inject(ctx, m)
		spans[i] = span
	}
	err := p.next.Publish(topic, msgs...)
	for _, s := range spans {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, "publish failed")
		}
		s.End()
	}
	return err
}

// Close closes the wrapped publisher.
func (p *Publisher) Close() error { return p.next.Close() }
