package middleware

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/retry"
)

// Redelivery configures the delayed-redelivery tier (second-level retries).
//
// When an event's in-process attempts are exhausted with a retryable error,
// the stack publishes a copy to the tier's delay topic instead of the DLQ,
// releases the claim (the delivery still counts towards MaxDeliveries) and
// acks the original once that publish succeeded (a failed publish nacks). A
// [DelayForwarder] handler consumes each delay topic and, once the copy's
// time has come, publishes it back to the original topic. After the last
// tier the message goes to the DLQ as usual.
//
// Ordering: the event leaves its place in the partition or queue, so later
// events of the same key may be processed before it. In-process retries keep
// order; this tier trades it for not blocking the partition or queue with one
// slow event.
type Redelivery struct {
	// Delays is the schedule, one tier each, e.g. 10s, 1m, 10m. Required.
	Delays []time.Duration
	// Publisher publishes delayed copies (it must confirm durably). Defaults
	// to Config.DLQ.Publisher.
	Publisher message.Publisher
	// Topic names tier i's delay topic. Defaults to "<original>.retry.<delay>",
	// e.g. "orders.retry.1m0s" ("idempo.retry.1m0s" for an empty topic).
	Topic func(originalTopic string, tier int, delay time.Duration) string
}

// ErrRedelivery is returned to the router (which nacks) when publishing a
// delayed copy to its redelivery tier failed. The claim was released and
// the delivery still counts towards MaxDeliveries; unlike [ErrDeadLetter],
// the record is not marked for the DLQ, so the next delivery runs the
// handler again. Match it with errors.Is.
var ErrRedelivery = errors.New("idempo: delayed-redelivery publish failed; nacked for redelivery")

// Metadata keys of delayed copies (docs/semantics.md lists them).
const (
	// keyRedeliveryTier counts the tiers a message went through.
	keyRedeliveryTier = "idempo_redelivery_tier"
	// keyNotBefore is when a delayed copy is due, RFC 3339 with nanoseconds.
	keyNotBefore = "idempo_not_before"
	// keyReturnTopic is where the forwarder sends a delayed copy back.
	keyReturnTopic = "idempo_return_topic"
)

// defaultRedeliveryTopic names tier topics "<original>.retry.<delay>", e.g.
// "orders.retry.1m0s"; see [Redelivery.Topic].
func defaultRedeliveryTopic(originalTopic string, _ int, delay time.Duration) string {
	if originalTopic == "" {
		originalTopic = "idempo"
	}
	return originalTopic + ".retry." + delay.String()
}

func redeliveryTier(msg *message.Message) int {
	n, err := strconv.Atoi(msg.Metadata.Get(keyRedeliveryTier))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// redeliverLater publishes the message to its next delay tier, releases the
// claim (counted) and acks; a failed publish nacks.
func (s *Stack) redeliverLater(d *delivery) error {
	// The claim is given up below either way: an extension that then finds
	// it released raced with the release and lost nothing.
	s.keeper.settle(d.held)
	r := s.cfg.Redelivery
	tier := redeliveryTier(d.msg)
	delay := r.Delays[tier]
	c := d.msg.Copy()
	c.Metadata.Set(keyRedeliveryTier, strconv.Itoa(tier+1))
	c.Metadata.Set(keyNotBefore, time.Now().Add(delay).UTC().Format(time.RFC3339Nano))
	c.Metadata.Set(keyReturnTopic, d.topic)
	c.SetContext(d.ctx)
	topic := r.Topic(d.topic, tier, delay)
	if err := r.Publisher.Publish(topic, c); err != nil {
		s.release(d, d.held, true)
		return s.nack(d, fmt.Errorf("%w: topic %q: %w", ErrRedelivery, topic, err))
	}
	s.release(d, d.held, true)
	s.cfg.Logger.Info("idempo: retries exhausted; redelivering later", "scope", d.scope, "event_id", d.eventID,
		"tier", tier+1, "delay", delay, "topic", topic, "error", d.fail.Error)
	return s.finish(d, OutcomeRedelivered, nil)
}

// DelayForwarder returns the handler for a delay topic: it waits until a
// copy is due (the wait ends when the message's context does, and the
// message is then nacked), then publishes it back to its original topic with
// pub and returns nil so the router acks. Copies are due in the order they
// arrive on one tier's topic, so waiting in order delays nothing. Add one
// router handler per tier topic. Safe for concurrent use.
func DelayForwarder(pub message.Publisher) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := msg.Context()
		if at, err := time.Parse(time.RFC3339Nano, msg.Metadata.Get(keyNotBefore)); err == nil {
			if err := sleep(ctx, time.Until(at)); err != nil {
				return err
			}
		}
		dest := msg.Metadata.Get(keyReturnTopic)
		if dest == "" {
			return retry.Permanent(fmt.Errorf("idempo: delayed copy %s has no %s", msg.UUID, keyReturnTopic))
		}
		c := msg.Copy()
		c.SetContext(context.WithoutCancel(ctx))
		return pub.Publish(dest, c)
	}
}
