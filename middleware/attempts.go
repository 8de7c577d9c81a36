package middleware

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/retry"
)

// runAcquired runs the handler under the claim acquired at start, with a
// context the lease keeper cancels if the lease is lost, and settles the record.
func (s *Stack) runAcquired(h message.HandlerFunc, d *delivery, l *lease, start time.Time) error {
	hctx, cancel := context.WithCancelCause(d.ctx)
	defer cancel(nil)
	s.keeper.activate(l, start, cancel)
	d.held = l
	defer s.keeper.unregister(l)
	if d.res.DueForDLQ != nil || (s.cfg.MaxDeliveries > 0 && d.res.Deliveries > s.cfg.MaxDeliveries) {
		return s.deadLetterDue(d)
	}
	return s.attempts(h, d, hctx)
}

// deadLetterDue dead-letters a claimed message without running the handler:
// its record is due for the DLQ, or it came more than MaxDeliveries times.
func (s *Stack) deadLetterDue(d *delivery) error {
	if d.res.DueForDLQ != nil {
		f, err := dlq.DecodeFailure(d.res.DueForDLQ)
		if err != nil {
			f.Error = err.Error()
		}
		return s.deadLetterHeld(d, f)
	}
	return s.deadLetterHeld(d, dlq.Failure{
		Reason: dlq.ReasonDeliveryCap,
		Error:  fmt.Sprintf("delivered %d times, more than MaxDeliveries (%d)", d.res.Deliveries, s.cfg.MaxDeliveries),
	})
}

func (s *Stack) attempts(h message.HandlerFunc, d *delivery, hctx context.Context) error {
	var sched *retry.Schedule
	for {
		start := time.Now()
		outs, stack, err := s.attempt(h, d, hctx)
		s.emit(hctx, Event{Kind: KindAttempt, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Duration: s.since(start), Err: err})
		if err == nil {
			return s.succeed(d, outs)
		}
		wait, settled, serr := s.failed(d, hctx, err, stack, start, &sched)
		if settled {
			return serr
		}
		if werr := sleep(hctx, wait); werr != nil {
			if c := context.Cause(hctx); errors.Is(c, dedup.ErrLeaseLost) || errors.Is(c, errLeaseExpired) {
				return s.leaseLost(d, c)
			}
			return s.cancelled(d, werr)
		}
	}
}

// failed records a failed attempt and decides what comes next: settled
// with the router's result (lease lost, cancelled, dead-lettered, delayed
// redelivery), or another attempt after wait.
func (s *Stack) failed(d *delivery, hctx context.Context, err error, stack []byte, start time.Time, sched **retry.Schedule) (wait time.Duration, settled bool, _ error) {
	if errors.Is(err, dedup.ErrLeaseLost) || errors.Is(context.Cause(hctx), dedup.ErrLeaseLost) || errors.Is(context.Cause(hctx), errLeaseExpired) {
		return 0, true, s.leaseLost(d, err)
	}
	if hctx.Err() != nil {
		return 0, true, s.cancelled(d, err)
	}
	now := time.Now()
	if d.fail.FirstFailure.IsZero() {
		d.fail.FirstFailure = start
	}
	d.fail.LastFailure = now
	d.fail.Error = err.Error()
	d.fail.Attempts++
	d.fail.ErrorClass = errorClass(s.cfg.Retry, err)
	if stack != nil {
		d.fail.ErrorClass = "panic"
		d.fail.PanicStack = string(stack)
	}
	// A handler's own context.Canceled while
	// nothing of the stack's is done is an ordinary failure: retried,
	// counted and capped. Only the stack's own contexts (checked above)
	// mean cancellation.
	if permanent(s.cfg.Retry, err) {
		d.fail.Reason = dlq.ReasonPermanent
		return 0, true, s.deadLetter(d, d.fail)
	}
	if *sched == nil {
		*sched = s.cfg.Retry.NewSchedule(start)
	}
	wait, ok := (*sched).Next()
	if !ok {
		if s.cfg.Redelivery != nil && d.held != nil && redeliveryTier(d.msg) < len(s.cfg.Redelivery.Delays) {
			return 0, true, s.redeliverLater(d)
		}
		d.fail.Reason = dlq.ReasonRetriesExhausted
		return 0, true, s.deadLetter(d, d.fail)
	}
	s.emit(hctx, Event{Kind: KindRetry, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Duration: wait, Err: err})
	return wait, false, nil
}

// attempt runs the handler once on a copy of the message, in the store's
// transaction when the stack is transactional and the message is claimed.
func (s *Stack) attempt(h message.HandlerFunc, d *delivery, hctx context.Context) ([]*message.Message, []byte, error) {
	if s.txc == nil || d.held == nil {
		return s.runOnce(h, d, hctx)
	}
	return s.attemptInTx(h, d, hctx)
}

func (s *Stack) attemptInTx(h message.HandlerFunc, d *delivery, hctx context.Context) (outs []*message.Message, stack []byte, err error) {
	start := time.Now()
	txErr := s.txc.CompleteInTx(hctx, d.key, d.held.token, s.cfg.Retention, func(ctx context.Context) error {
		outs, stack, err = s.runOnce(h, d, ctx)
		if err != nil {
			return err
		}
		// Outputs go out before the commit that records completion.
		if perr := s.publishOutputs(ctx, d, outs); perr != nil {
			return perr
		}
		// From here the fenced completion in the transaction decides; an
		// extension that finds the record settled raced with the commit.
		s.keeper.settle(d.held)
		return nil
	})
	if txErr != nil {
		s.keeper.unsettle(d.held)
	}
	if err == nil && txErr != nil {
		// The handler succeeded but the transaction did not commit: nothing
		// of it happened. Retry unless the claim is lost.
		s.observeStore(hctx, d.handler, d.topic, opCompleteInTx, start, txErr)
		if errors.Is(txErr, dedup.ErrLeaseLost) || retry.IsPermanent(txErr) {
			return nil, nil, txErr
		}
		return nil, nil, fmt.Errorf("%w: transaction: %w", ErrStore, txErr)
	}
	if err == nil {
		s.observeStore(hctx, d.handler, d.topic, opCompleteInTx, start, nil)
		d.completed = true
	}
	return outs, stack, err
}

// runOnce calls the handler on a fresh copy of the message.
func (s *Stack) runOnce(h message.HandlerFunc, d *delivery, ctx context.Context) ([]*message.Message, []byte, error) {
	if s.tracer != nil {
		return s.runOnceTraced(h, d, ctx)
	}
	cp := d.msg.Copy()
	cp.SetContext(ctx)
	outs, stack, err := call(h, cp)
	s.afterRun(d, cp, stack)
	return outs, stack, err
}

func (s *Stack) runOnceTraced(h message.HandlerFunc, d *delivery, ctx context.Context) ([]*message.Message, []byte, error) {
	ctx, span := s.tracer.Start(ctx, "idempo attempt", trace.WithAttributes(attribute.Int("idempo.attempt", d.fail.Attempts+1)))
	defer span.End()
	cp := d.msg.Copy()
	cp.SetContext(ctx)
	outs, stack, err := call(h, cp)
	s.afterRun(d, cp, stack)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "attempt failed")
	}
	return outs, stack, err
}

// afterRun counts the handler's own (ignored) Ack or Nack and panics.
func (s *Stack) afterRun(d *delivery, cp *message.Message, stack []byte) {
	select {
	case <-cp.Acked():
		s.ignoredAck(d, "Ack")
	case <-cp.Nacked():
		s.ignoredAck(d, "Nack")
	default:
	}
}

// call runs h, turning a panic into a *panicError with its stack.
func call(h message.HandlerFunc, msg *message.Message) (outs []*message.Message, stack []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			stack = debug.Stack()
			outs, err = nil, &panicError{Value: r, Stack: stack}
		}
	}()
	outs, err = h(msg)
	return outs, nil, err
}

func (s *Stack) ignoredAck(d *delivery, which string) {
	s.emit(d.ctx, Event{Kind: KindIgnoredAck, Handler: d.handler, Topic: d.topic, EventID: d.eventID})
	s.cfg.Logger.Debug("idempo: the handler called "+which+" on its copy of the message; ignored (the stack acks after success)",
		"handler", d.handler, "event_id", d.eventID)
}
