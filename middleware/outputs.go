package middleware

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/idempo/idempo/retry"
	"github.com/idempo/idempo/tracing"
)

// TxOutbox writes messages into the transaction that the transactional
// inbox carries in ctx (see [Config].Outbox). *outbox.Outbox implements it.
// WriteInTx must be safe for concurrent use, write nothing outside that
// transaction, and fail when ctx carries none.
type TxOutbox interface {
	WriteInTx(ctx context.Context, topic string, msgs ...*message.Message) error
}

var outputNamespace = uuid.MustParse("0d9c0b8e-9a0b-4c51-8f0e-6a3b7f2d1c44")

// outputUUID is the UUID the stack gives the index-th message a handler
// returns for an event: derived from scope, event ID and index, so outputs
// of a repeated run are themselves deduplicable downstream.
func outputUUID(scope, eventID string, index int) string {
	return uuid.NewSHA1(outputNamespace, []byte(scope+"\x00"+eventID+"\x00"+strconv.Itoa(index))).String()
}

// prepareOutputs names the outputs' topic and gives them their derived
// UUIDs and the trace context.
func (s *Stack) prepareOutputs(ctx context.Context, d *delivery, outs []*message.Message) (string, error) {
	topic := s.cfg.OutputTopic
	if topic == "" {
		topic = message.PublishTopicFromCtx(d.ctx)
	}
	switch {
	case s.cfg.OutputPublisher == nil && s.cfg.Outbox == nil:
		return "", retry.Permanent(fmt.Errorf("idempo: handler returned %d messages but neither Config.OutputPublisher nor Config.Outbox is set", len(outs)))
	case topic == "":
		return "", retry.Permanent(fmt.Errorf("idempo: handler returned %d messages but neither Config.OutputTopic nor the router handler's publish topic is set", len(outs)))
	}
	for i, o := range outs {
		if d.eventID != "" {
			o.UUID = outputUUID(d.scope, d.eventID, i)
		}
		if s.tracer != nil {
			tracing.Inject(ctx, o)
		}
	}
	return topic, nil
}

func (s *Stack) publishOutputs(ctx context.Context, d *delivery, outs []*message.Message) error {
	if len(outs) == 0 {
		return nil
	}
	topic, err := s.prepareOutputs(ctx, d, outs)
	if err != nil {
		return err
	}
	if s.cfg.Outbox != nil {
		// ctx carries the inbox's transaction: a failed write has spoilt
		// it (PostgreSQL aborts the whole transaction), so it is not
		// retried here; the attempt fails and rolls back with it.
		if err := s.cfg.Outbox.WriteInTx(ctx, topic, outs...); err != nil {
			return fmt.Errorf("%w: outbox, topic %q: %w", ErrOutputPublish, topic, err)
		}
		return nil
	}
	err = retryDo(ctx, s.cfg.Retry, func(context.Context) error {
		return s.cfg.OutputPublisher.Publish(topic, outs...)
	})
	if err != nil {
		return fmt.Errorf("%w: topic %q: %w", ErrOutputPublish, topic, err)
	}
	return nil
}
