package middleware

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/tracing"
)

// delivery is the state of one message's trip through the stack.
type delivery struct {
	msg     *message.Message
	ctx     context.Context
	handler string
	topic   string
	scope   string
	eventID string
	key     dedup.Key
	held    *lease // nil without a claim
	res     dedup.ClaimResult
	fail    dlq.Failure
	// completed is set when the transactional inbox recorded completion.
	completed bool
	gate      lease      // the local gate and, once acquired, the lease (held points here)
	span      trace.Span // nil without tracing
}

func (s *Stack) newDelivery(msg *message.Message) *delivery {
	ctx := msg.Context()
	d := &delivery{msg: msg, ctx: ctx, handler: message.HandlerNameFromCtx(ctx), topic: message.SubscribeTopicFromCtx(ctx)}
	d.scope = s.cfg.Scope
	if d.scope == "" {
		d.scope = d.handler
	}
	if d.scope == "" {
		d.scope = "default"
	}
	return d
}

// startSpan starts the delivery's span, continuing the publisher's trace.
func (s *Stack) startSpan(d *delivery) {
	ctx := tracing.Extract(d.ctx, d.msg)
	d.ctx, d.span = s.tracer.Start(ctx, d.topic+" process",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.destination.name", d.topic),
			attribute.String("messaging.message.id", d.msg.UUID),
			attribute.String("idempo.handler", d.handler),
			attribute.String("idempo.scope", d.scope),
		))
}

// identify sets the delivery's key. A message that cannot be identified is
// dead-lettered (settled is true and err is what the router gets) with
// reason missing_event_id (no ID, or an empty one) or invalid_event_id (an
// ID that cannot be stored, e.g. too long; the copy carries it shortened),
// or, with AllowMissingEventID and no ID, left without a key to run unclaimed.
// A scope that cannot be stored (a handler name too long, with a NUL, or not
// UTF-8) is invalid_scope, and a replay marker too long to store malformed:
// redeliveries could never be claimed.
func (s *Stack) identify(d *delivery) (settled bool, err error) {
	if reason := d.msg.Metadata.Get(dlqmeta.KeyMalformed); reason != "" {
		return true, s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMalformed, Error: reason})
	}
	if n := len(d.msg.Metadata.Get(dlqmeta.KeyReplayID)); n > dedup.MaxReplayIDLen {
		return true, s.deadLetterUnclaimed(d, dlq.Failure{
			Reason: dlq.ReasonMalformed,
			Error:  fmt.Sprintf("metadata %s is %d bytes, more than %d", dlqmeta.KeyReplayID, n, dedup.MaxReplayIDLen),
		})
	}
	id, err := s.cfg.EventID(d.msg)
	if err == nil && id == "" {
		err = dedup.ErrMissingEventID
	}
	if errors.Is(err, dedup.ErrMissingEventID) {
		// A replay of an entry whose producer set no ID: the event is the
		// entry, named by its replay marker, so each replay runs once.
		if rid := d.msg.Metadata.Get(dlqmeta.KeyReplayID); rid != "" {
			id, err = rid, nil
		}
	}
	if err == nil {
		key := dedup.Key{Scope: d.scope, ID: id}
		if err = key.Validate(); err == nil {
			d.key, d.eventID = key, id
			if d.span != nil {
				d.span.SetAttributes(attribute.String("idempo.event_id", id))
			}
			return false, nil
		}
		d.eventID = dlqmeta.ShortEventID(id)
		if serr := (dedup.Key{Scope: d.scope, ID: "x"}).Validate(); serr != nil {
			return true, s.deadLetterUnclaimed(d, dlq.Failure{
				Reason: dlq.ReasonInvalidScope,
				Error:  fmt.Sprintf("scope %q (the router handler's name unless Config.Scope is set): %v", d.scope, serr),
			})
		}
		return true, s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonInvalidEventID, Error: err.Error()})
	}
	if s.cfg.AllowMissingEventID && errors.Is(err, dedup.ErrMissingEventID) {
		return false, nil
	}
	return true, s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMissingEventID, Error: err.Error()})
}
