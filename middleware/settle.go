package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/retry"
)

// succeed publishes outputs (outside a transaction), records completion and acks.
func (s *Stack) succeed(d *delivery, outs []*message.Message) error {
	if d.held != nil {
		s.keeper.settle(d.held)
	}
	if s.txc == nil || d.held == nil {
		if err := s.publishOutputs(d.ctx, d, outs); err != nil {
			if retry.IsPermanent(err) {
				d.fail = dlq.Failure{Reason: dlq.ReasonPermanent, Error: err.Error(), ErrorClass: "permanent", Attempts: d.fail.Attempts + 1}
				return s.deadLetter(d, d.fail)
			}
			if d.held != nil {
				s.release(d, d.held, d.ctx.Err() == nil)
			}
			return s.nack(d, err)
		}
	}
	if d.held != nil && !d.completed {
		s.complete(d)
	}
	return s.finish(d, OutcomeProcessed, nil)
}

// complete records completion, retrying while the lease lasts. It never
// nacks: the effect has happened, and a nack would make a second one certain.
func (s *Stack) complete(d *delivery) {
	// Fast path: one call on the message's context (detached if it is
	// already done: the effect happened and must be recorded).
	ctx := d.ctx
	if ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	start := time.Now()
	err := s.cfg.Store.Complete(ctx, d.key, d.held.token, s.cfg.Retention)
	s.observeStore(ctx, d.handler, d.topic, opComplete, start, err)
	if err != nil && !errors.Is(err, dedup.ErrLeaseLost) {
		err = s.completeRetry(d)
	}
	s.completeOutcome(d, err)
}

// completeRetry retries Complete while the lease lasts.
func (s *Stack) completeRetry(d *delivery) error {
	ctx, cancel := context.WithDeadline(context.WithoutCancel(d.ctx), d.held.deadlineSnapshot(s.keeper))
	defer cancel()
	return retryDo(ctx, settlePolicy, func(ctx context.Context) error {
		start := time.Now()
		err := s.cfg.Store.Complete(ctx, d.key, d.held.token, s.cfg.Retention)
		s.observeStore(ctx, d.handler, d.topic, opComplete, start, err)
		if errors.Is(err, dedup.ErrLeaseLost) {
			return retry.Permanent(err)
		}
		return err
	})
}

func (s *Stack) completeOutcome(d *delivery, err error) {
	switch {
	case err == nil:
	case errors.Is(err, dedup.ErrLeaseLost):
		s.emit(d.ctx, Event{Kind: KindLeaseLost, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
		s.cfg.Logger.Warn("idempo: lease lost before completion was recorded; acked (another owner holds the event)",
			"scope", d.scope, "event_id", d.eventID)
	default:
		s.emit(d.ctx, Event{Kind: KindCompleteFailed, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
		s.cfg.Logger.Error("idempo: completion could not be recorded; acked anyway (a nack would repeat the effect)",
			"scope", d.scope, "event_id", d.eventID, "error", err)
	}
}

// settlePolicy retries store calls that settle a record (complete,
// mark dead-lettered) within the remaining lease.
var settlePolicy = retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: time.Second, MaxAttempts: 8, MaxElapsed: -1}

func (l *lease) deadlineSnapshot(k *keeper) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return l.deadline
}

// deadLetter dead-letters a message, held under a claim or not.
func (s *Stack) deadLetter(d *delivery, f dlq.Failure) error {
	if d.held == nil {
		return s.deadLetterUnclaimed(d, f)
	}
	return s.deadLetterHeld(d, f)
}

func (s *Stack) info(d *delivery, f dlq.Failure) dlq.Info {
	return dlq.Info{OriginalTopic: d.topic, Handler: d.handler, Scope: d.scope, EventID: d.eventID, Deliveries: d.res.Deliveries, Failure: f}
}

// deadLetterHeld publishes the copy, then marks the record dead-lettered and
// acks. If the publish fails, the record is marked due for the DLQ and the
// message nacked, so the redelivery dead-letters it without running the handler.
func (s *Stack) deadLetterHeld(d *delivery, f dlq.Failure) error {
	s.keeper.settle(d.held)
	ctx := context.WithoutCancel(d.ctx)
	if err := s.dlq.Publish(d.ctx, d.msg, s.info(d, f)); err != nil {
		s.dlqFailed(d, err)
		mctx, cancel := context.WithDeadline(ctx, d.held.deadlineSnapshot(s.keeper))
		start := time.Now()
		merr := s.cfg.Store.MarkDueForDLQ(mctx, d.key, d.held.token, f.Encode())
		cancel()
		s.observeStore(ctx, d.handler, d.topic, opMarkDueForDLQ, start, merr)
		if merr != nil {
			s.cfg.Logger.Warn("idempo: could not mark the event due for the DLQ; the next delivery runs the handler again",
				"scope", d.scope, "event_id", d.eventID, "error", merr)
		}
		return s.nack(d, fmt.Errorf("%w: %w", ErrDeadLetter, err))
	}
	mctx, cancel := context.WithDeadline(ctx, d.held.deadlineSnapshot(s.keeper))
	defer cancel()
	err := retryDo(mctx, settlePolicy, func(ctx context.Context) error {
		start := time.Now()
		err := s.cfg.Store.MarkDeadLettered(ctx, d.key, d.held.token, s.cfg.Retention)
		s.observeStore(ctx, d.handler, d.topic, opMarkDeadLettered, start, err)
		if errors.Is(err, dedup.ErrLeaseLost) {
			return retry.Permanent(err)
		}
		return err
	})
	if err != nil {
		// The copy is safely in the DLQ: ack. A later duplicate may run again
		// and be dead-lettered again under the same entry ID.
		s.cfg.Logger.Warn("idempo: dead-lettered, but the record could not be marked so", "scope", d.scope, "event_id", d.eventID, "error", err)
	}
	return s.deadLettered(d, f)
}

func (s *Stack) deadLetterUnclaimed(d *delivery, f dlq.Failure) error {
	if err := s.dlq.Publish(d.ctx, d.msg, s.info(d, f)); err != nil {
		s.dlqFailed(d, err)
		return s.nack(d, fmt.Errorf("%w: %w", ErrDeadLetter, err))
	}
	return s.deadLettered(d, f)
}

func (s *Stack) deadLettered(d *delivery, f dlq.Failure) error {
	s.cfg.Logger.Warn("idempo: message dead-lettered", "handler", d.handler, "topic", d.topic, "scope", d.scope,
		"event_id", d.eventID, "reason", f.Reason, "error", f.Error, "attempts", f.Attempts, "deliveries", d.res.Deliveries)
	return s.finish(d, OutcomeDeadLettered, nil)
}

func (s *Stack) dlqFailed(d *delivery, err error) {
	s.emit(d.ctx, Event{Kind: KindDLQPublishFailed, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
	s.cfg.Logger.Error("idempo: dead-letter publish failed; nacking", "handler", d.handler, "event_id", d.eventID, "error", err)
}

// cancelled releases the claim without counting the delivery and nacks.
func (s *Stack) cancelled(d *delivery, err error) error {
	if d.held != nil {
		s.release(d, d.held, false)
	}
	return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, err))
}

// leaseLost nacks without touching the record: another owner has it.
func (s *Stack) leaseLost(d *delivery, err error) error {
	s.emit(d.ctx, Event{Kind: KindLeaseLost, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
	s.cfg.Logger.Warn("idempo: lease lost while processing; nacked", "scope", d.scope, "event_id", d.eventID, "error", err)
	return s.nack(d, fmt.Errorf("%w: %w", dedup.ErrLeaseLost, err))
}

// release gives the claim back. An extension that races it and finds the
// record no longer held is no loss (the lease is settling).
func (s *Stack) release(d *delivery, l *lease, keepCount bool) {
	s.keeper.settle(l)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), s.cfg.Lease)
	defer cancel()
	start := time.Now()
	err := s.cfg.Store.Release(ctx, d.key, l.token, keepCount)
	s.observeStore(ctx, d.handler, d.topic, opRelease, start, err)
	if err != nil {
		s.cfg.Logger.Warn("idempo: releasing the claim failed; it is freed when its lease runs out",
			"scope", d.scope, "event_id", d.eventID, "error", err)
	}
}

// nack ends the delivery as failed: the router nacks with err.
func (s *Stack) nack(d *delivery, err error) error {
	return s.finish(d, OutcomeFailed, err)
}

// finish ends a delivery: every delivery ends here exactly once, with one
// outcome event (which feeds Stats, the Observer and the span). A nil err
// acks. Otherwise the router nacks with err, after NackDelay (for "in
// progress elsewhere" at most the other owner's remaining lease), so brokers
// that redeliver at once do not spin; the wait ends at once when the
// message's context is done (shutdown, rebalance, revoked partition).
func (s *Stack) finish(d *delivery, o Outcome, err error) error {
	if d.span != nil {
		d.span.SetAttributes(attribute.String("idempo.outcome", string(o)))
		if o == OutcomeFailed || o == OutcomeDeadLettered {
			d.span.SetStatus(codes.Error, string(o))
		}
	}
	s.emit(d.ctx, Event{Kind: KindOutcome, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Outcome: o})
	if err != nil {
		var atMost time.Duration
		if o == OutcomeInProgress {
			atMost = d.res.LeaseRemaining
		}
		s.nackWait(d.ctx, atMost)
	}
	return err
}

func (s *Stack) nackWait(ctx context.Context, atMost time.Duration) {
	wait := s.cfg.NackDelay
	if wait <= 0 {
		return
	}
	if atMost > 0 && atMost < wait {
		wait = atMost
	}
	_ = sleep(ctx, wait)
}

// emit feeds one event to the stack's Stats and, when one is set, to the
// Observer. Every count in Stats comes from an event emitted here.
func (s *Stack) emit(ctx context.Context, e Event) {
	s.stats.add(e)
	if s.observed {
		s.cfg.Observer.Observe(ctx, e)
	}
}

// since is the time since start for an event's Duration, read only when an
// Observer will see it.
func (s *Stack) since(start time.Time) time.Duration {
	if !s.observed {
		return 0
	}
	return time.Since(start)
}

func (s *Stack) observeStore(ctx context.Context, handler, topic, op string, start time.Time, err error) {
	s.emit(ctx, Event{Kind: KindStoreOp, Handler: handler, Topic: topic, Op: op, Duration: s.since(start), Err: err})
}
