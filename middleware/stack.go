package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/retry"
	"github.com/idempo/idempo/tracing"
)

// Errors a wrapped handler returns to the router to make it nack. Each
// matches with errors.Is; the router logs them.
var (
	// ErrInProgressElsewhere: another owner holds a live claim of the event.
	ErrInProgressElsewhere = errors.New("idempo: event in progress elsewhere; nacked for redelivery")
	// ErrStore: the dedup store failed; nothing was processed.
	ErrStore = errors.New("idempo: dedup store failed; nacked for redelivery")
	// ErrDeadLetter: the dead-letter publish failed; the record is due for
	// the DLQ, and the redelivery dead-letters without running the handler.
	ErrDeadLetter = errors.New("idempo: dead-letter publish failed; nacked for redelivery")
	// ErrCancelled: processing was cancelled (shutdown, rebalance); the claim
	// was released.
	ErrCancelled = errors.New("idempo: processing cancelled; claim released and nacked")
	// ErrOutputPublish: publishing the handler's outputs failed; the claim
	// was released (the delivery still counts).
	ErrOutputPublish = errors.New("idempo: publishing handler outputs failed; nacked for redelivery")
)

// PanicError is a recovered handler panic. It is retryable like any error.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// Stack is idempo's composed middleware: dedup, retries, dead-lettering and
// ack only after success, in the one correct order. A Stack is safe for
// concurrent use by any number of handlers and router goroutines.
type Stack struct {
	cfg    Config
	dlq    *dlq.Router
	keeper *keeper
	stats  counters
	txc    dedup.TxCompleter
	tracer trace.Tracer // nil without Config.TracerProvider
}

// New validates cfg, applies its defaults and returns a Stack. Errors match
// [ErrConfig] and name the field.
func New(cfg Config) (*Stack, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	router, err := dlq.New(dlq.Config{Publisher: cfg.DLQPublisher, Topic: cfg.DLQTopic, OnDeadLettered: cfg.OnDeadLettered})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := &Stack{cfg: cfg, dlq: router}
	if cfg.Transactional {
		s.txc = cfg.Store.(dedup.TxCompleter)
	}
	if w := cfg.Retry.MaxTotalWait(); w > rabbitConsumerTimeout/2 {
		cfg.Logger.Warn("idempo: the retry window is long; RabbitMQ closes channels whose deliveries stay unacked for consumer_timeout (30 min by default)",
			"max_total_wait", w)
	}
	if cfg.TracerProvider != nil {
		s.tracer = cfg.TracerProvider.Tracer(tracing.InstrumentationName)
	}
	s.keeper = newKeeper(s)
	return s, nil
}

// Middleware returns the stack as a Watermill handler middleware.
func (s *Stack) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		return nil, s.handle(h, msg)
	}
}

// Wrap returns h wrapped by the stack (the same as s.Middleware(h)).
func (s *Stack) Wrap(h message.HandlerFunc) message.HandlerFunc { return s.Middleware(h) }

// Close stops the stack's lease keeper goroutine and waits for it. Claims
// still held lose their extensions. The keeper also stops by itself shortly
// after no claim is held, so Close is needed only to stop it at once (e.g.
// in tests that check for leaked goroutines). Safe to call more than once.
func (s *Stack) Close() error {
	s.keeper.close()
	return nil
}

// Stats returns the running totals.
func (s *Stack) Stats() Stats { return s.stats.snapshot() }

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

func (s *Stack) handle(h message.HandlerFunc, msg *message.Message) error {
	ctx := msg.Context()
	d := &delivery{msg: msg, ctx: ctx, handler: message.HandlerNameFromCtx(ctx), topic: message.SubscribeTopicFromCtx(ctx)}
	d.scope = s.cfg.Scope
	if d.scope == "" {
		d.scope = d.handler
	}
	if d.scope == "" {
		d.scope = "default"
	}
	if s.tracer != nil {
		ctx = tracing.Extract(ctx, msg)
		ctx, d.span = s.tracer.Start(ctx, d.topic+" process",
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.destination.name", d.topic),
				attribute.String("messaging.message.id", msg.UUID),
				attribute.String("idempo.handler", d.handler),
				attribute.String("idempo.scope", d.scope),
			))
		defer d.span.End()
		d.ctx = ctx
	}

	if reason := msg.Metadata.Get(dlq.KeyMalformed); reason != "" {
		return s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMalformed, Error: reason})
	}
	id, err := s.cfg.EventID(msg)
	if err == nil {
		d.key = dedup.Key{Scope: d.scope, ID: id}
		err = d.key.Validate()
		d.eventID = id
		if d.span != nil {
			d.span.SetAttributes(attribute.String("idempo.event_id", id))
		}
	}
	if err != nil {
		if s.cfg.AllowMissingEventID && errors.Is(err, dedup.ErrMissingEventID) {
			return s.runUnclaimed(h, d)
		}
		return s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMissingEventID, Error: err.Error()})
	}

	var fp []byte
	if s.cfg.Fingerprint {
		fp = dedup.Fingerprint(msg)
	}
	for {
		l := &d.gate
		*l = lease{key: d.key, token: s.keeper.newToken(), handler: d.handler, topic: d.topic}
		if wait := s.keeper.enter(l); wait != nil {
			// A twin in this process holds the key: wait for it, then ask the store.
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, ctx.Err()), false)
			}
		}
		start := time.Now()
		res, err := s.cfg.Store.Claim(ctx, d.key, dedup.ClaimRequest{
			Token:       l.token,
			Lease:       s.cfg.Lease,
			Retention:   s.cfg.Retention,
			Fingerprint: fp,
			ReplayID:    msg.Metadata.Get(dlq.KeyReplayID),
		})
		s.observeStore(ctx, d.handler, d.topic, OpClaim, start, err)
		if err != nil || res.Status != dedup.StatusAcquired {
			s.keeper.unregister(l)
		}
		if err != nil {
			if ctx.Err() != nil {
				return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, err), false)
			}
			s.cfg.Logger.Warn("idempo: dedup store claim failed; nacking", "scope", d.scope, "event_id", d.eventID, "error", err)
			return s.nack(d, fmt.Errorf("%w: claim: %w", ErrStore, err), true)
		}
		d.res = res
		if fp != nil && len(res.Fingerprint) > 0 && !bytes.Equal(fp, res.Fingerprint) {
			if res.Status == dedup.StatusAcquired {
				// The record belongs to the first payload: give it back untouched.
				s.release(d, l, false)
				s.keeper.unregister(l)
			}
			return s.deadLetterUnclaimed(d, dlq.Failure{
				Reason: dlq.ReasonIDCollision,
				Error:  "event ID " + strconv.Quote(d.eventID) + " was seen before with another payload",
			})
		}
		switch res.Status {
		case dedup.StatusDone, dedup.StatusDeadLettered:
			s.stats.duplicates.Add(1)
			s.outcome(d, OutcomeDuplicate)
			return nil
		case dedup.StatusInProgress:
			s.stats.inProgress.Add(1)
			s.outcome(d, OutcomeInProgress)
			s.nackWait(ctx, res.LeaseRemaining)
			return ErrInProgressElsewhere
		case dedup.StatusAcquired:
			hctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			s.keeper.activate(l, start, cancel)
			d.held = l
			return s.runClaimed(h, d, hctx)
		default:
			return s.nack(d, fmt.Errorf("%w: claim returned unknown status %v", ErrStore, res.Status), true)
		}
	}
}

// runClaimed runs the handler under an acquired claim and settles the record.
func (s *Stack) runClaimed(h message.HandlerFunc, d *delivery, hctx context.Context) error {
	defer s.keeper.unregister(d.held)
	if d.res.DueForDLQ != nil {
		f, err := dlq.DecodeFailure(d.res.DueForDLQ)
		if err != nil {
			f.Error = err.Error()
		}
		return s.deadLetterHeld(d, f)
	}
	if s.cfg.MaxDeliveries > 0 && d.res.Deliveries > s.cfg.MaxDeliveries {
		return s.deadLetterHeld(d, dlq.Failure{
			Reason: dlq.ReasonDeliveryCap,
			Error:  fmt.Sprintf("delivered %d times, more than MaxDeliveries (%d)", d.res.Deliveries, s.cfg.MaxDeliveries),
		})
	}
	return s.attempts(h, d, hctx)
}

// runUnclaimed runs a message without an event ID (AllowMissingEventID):
// retries and the DLQ apply, dedup does not.
func (s *Stack) runUnclaimed(h message.HandlerFunc, d *delivery) error {
	return s.attempts(h, d, d.ctx)
}

func (s *Stack) attempts(h message.HandlerFunc, d *delivery, hctx context.Context) error {
	var sched *retry.Schedule
	for {
		start := time.Now()
		outs, stack, err := s.attempt(h, d, hctx)
		s.stats.attempts.Add(1)
		s.cfg.Observer.Observe(hctx, Event{Kind: KindAttempt, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Duration: time.Since(start), Err: err})
		if err == nil {
			return s.succeed(d, outs)
		}
		if errors.Is(err, dedup.ErrLeaseLost) || errors.Is(context.Cause(hctx), dedup.ErrLeaseLost) || errors.Is(context.Cause(hctx), errLeaseExpired) {
			return s.leaseLost(d, err)
		}
		if hctx.Err() != nil {
			return s.cancelled(d, err)
		}
		now := time.Now()
		if d.fail.FirstFailure.IsZero() {
			d.fail.FirstFailure = start
		}
		d.fail.LastFailure = now
		d.fail.Error = err.Error()
		d.fail.Attempts++
		class := s.cfg.Retry.Classify(err)
		d.fail.ErrorClass = class.String()
		if stack != nil {
			d.fail.ErrorClass = "panic"
			d.fail.PanicStack = string(stack)
		}
		switch class {
		case retry.Cancelled:
			return s.cancelled(d, err)
		case retry.PermanentClass:
			d.fail.Reason = dlq.ReasonPermanent
			return s.deadLetter(d, d.fail)
		}
		if sched == nil {
			sched = s.cfg.Retry.NewSchedule(start)
		}
		wait, ok := sched.Next()
		if !ok {
			if s.cfg.Redelivery != nil && d.held != nil && redeliveryTier(d.msg) < len(s.cfg.Redelivery.Delays) {
				return s.redeliverLater(d)
			}
			d.fail.Reason = dlq.ReasonRetriesExhausted
			return s.deadLetter(d, d.fail)
		}
		s.stats.retries.Add(1)
		s.cfg.Observer.Observe(hctx, Event{Kind: KindRetry, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Duration: wait, Err: err})
		if werr := retry.Wait(hctx, wait); werr != nil {
			if c := context.Cause(hctx); errors.Is(c, dedup.ErrLeaseLost) || errors.Is(c, errLeaseExpired) {
				return s.leaseLost(d, c)
			}
			return s.cancelled(d, werr)
		}
	}
}

// attempt runs the handler once on a copy of the message, in the store's
// transaction when the stack is transactional and the message is claimed.
func (s *Stack) attempt(h message.HandlerFunc, d *delivery, hctx context.Context) (outs []*message.Message, stack []byte, err error) {
	if s.txc == nil || d.held == nil {
		return s.runOnce(h, d, hctx)
	}
	start := time.Now()
	txErr := s.txc.CompleteInTx(hctx, d.key, d.held.token, s.cfg.Retention, func(ctx context.Context) error {
		outs, stack, err = s.runOnce(h, d, ctx)
		if err != nil {
			return err
		}
		// Outputs go out before the commit that records completion.
		return s.publishOutputs(ctx, d, outs)
	})
	if err == nil && txErr != nil {
		// The handler succeeded but the transaction did not commit: nothing
		// of it happened. Retry unless the claim is lost.
		s.observeStore(hctx, d.handler, d.topic, OpCompleteInTx, start, txErr)
		if errors.Is(txErr, dedup.ErrLeaseLost) || retry.IsPermanent(txErr) {
			return nil, nil, txErr
		}
		return nil, nil, fmt.Errorf("%w: transaction: %w", ErrStore, txErr)
	}
	if err == nil {
		s.observeStore(hctx, d.handler, d.topic, OpCompleteInTx, start, nil)
		d.completed = true
	}
	return outs, stack, err
}

// runOnce calls the handler on a fresh copy of the message.
func (s *Stack) runOnce(h message.HandlerFunc, d *delivery, ctx context.Context) ([]*message.Message, []byte, error) {
	var span trace.Span
	if s.tracer != nil {
		ctx, span = s.tracer.Start(ctx, "idempo attempt", trace.WithAttributes(attribute.Int("idempo.attempt", d.fail.Attempts+1)))
		defer span.End()
	}
	cp := d.msg.Copy()
	cp.SetContext(ctx)
	outs, stack, err := call(h, cp)
	select {
	case <-cp.Acked():
		s.ignoredAck(d, "Ack")
	case <-cp.Nacked():
		s.ignoredAck(d, "Nack")
	default:
	}
	if stack != nil {
		s.stats.panics.Add(1)
	}
	if span != nil && err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "attempt failed")
	}
	return outs, stack, err
}

// call runs h, turning a panic into a *PanicError with its stack.
func call(h message.HandlerFunc, msg *message.Message) (outs []*message.Message, stack []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			stack = debug.Stack()
			outs, err = nil, &PanicError{Value: r, Stack: stack}
		}
	}()
	outs, err = h(msg)
	return outs, nil, err
}

func (s *Stack) ignoredAck(d *delivery, which string) {
	s.stats.ignoredAcks.Add(1)
	s.cfg.Observer.Observe(d.ctx, Event{Kind: KindIgnoredAck, Handler: d.handler, Topic: d.topic, EventID: d.eventID})
	s.cfg.Logger.Debug("idempo: the handler called "+which+" on its copy of the message; ignored (the stack acks after success)",
		"handler", d.handler, "event_id", d.eventID)
}

var outputNamespace = uuid.MustParse("0d9c0b8e-9a0b-4c51-8f0e-6a3b7f2d1c44")

// OutputUUID is the UUID the stack gives the index-th message a handler
// returns for an event: derived from scope, event ID and index, so outputs
// of a repeated run are themselves deduplicable downstream.
func OutputUUID(scope, eventID string, index int) string {
	return uuid.NewSHA1(outputNamespace, []byte(scope+"\x00"+eventID+"\x00"+strconv.Itoa(index))).String()
}

func (s *Stack) publishOutputs(ctx context.Context, d *delivery, outs []*message.Message) error {
	if len(outs) == 0 {
		return nil
	}
	topic := s.cfg.OutputTopic
	if topic == "" {
		topic = message.PublishTopicFromCtx(d.ctx)
	}
	if s.cfg.OutputPublisher == nil || topic == "" {
		return retry.Permanent(fmt.Errorf("idempo: handler returned %d messages but Config.OutputPublisher or the output topic is not set", len(outs)))
	}
	for i, o := range outs {
		if d.eventID != "" {
			o.UUID = OutputUUID(d.scope, d.eventID, i)
		}
		if s.tracer != nil {
			tracing.Inject(ctx, o)
		}
	}
	err := retry.Do(ctx, s.cfg.Retry, func(context.Context) error {
		return s.cfg.OutputPublisher.Publish(topic, outs...)
	})
	if err != nil {
		return fmt.Errorf("%w: topic %q: %w", ErrOutputPublish, topic, err)
	}
	return nil
}

// succeed publishes outputs (outside a transaction), records completion and acks.
func (s *Stack) succeed(d *delivery, outs []*message.Message) error {
	if s.txc == nil || d.held == nil {
		if err := s.publishOutputs(d.ctx, d, outs); err != nil {
			if retry.IsPermanent(err) {
				d.fail = dlq.Failure{Reason: dlq.ReasonPermanent, Error: err.Error(), ErrorClass: "permanent", Attempts: d.fail.Attempts + 1}
				return s.deadLetter(d, d.fail)
			}
			if d.held != nil {
				s.release(d, d.held, d.ctx.Err() == nil)
			}
			return s.nack(d, err, true)
		}
	}
	if d.held != nil && !d.completed {
		s.complete(d)
	}
	s.stats.processed.Add(1)
	s.outcome(d, OutcomeProcessed)
	return nil
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
	s.observeStore(ctx, d.handler, d.topic, OpComplete, start, err)
	if err != nil && !errors.Is(err, dedup.ErrLeaseLost) {
		err = s.completeRetry(d)
	}
	s.completeOutcome(d, err)
}

// completeRetry retries Complete while the lease lasts.
func (s *Stack) completeRetry(d *delivery) error {
	ctx, cancel := context.WithDeadline(context.WithoutCancel(d.ctx), d.held.deadlineSnapshot(s.keeper))
	defer cancel()
	return retry.Do(ctx, settlePolicy, func(ctx context.Context) error {
		start := time.Now()
		err := s.cfg.Store.Complete(ctx, d.key, d.held.token, s.cfg.Retention)
		s.observeStore(ctx, d.handler, d.topic, OpComplete, start, err)
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
		s.stats.leaseLost.Add(1)
		s.cfg.Observer.Observe(d.ctx, Event{Kind: KindLeaseLost, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
		s.cfg.Logger.Warn("idempo: lease lost before completion was recorded; acked (another owner holds the event)",
			"scope", d.scope, "event_id", d.eventID)
	default:
		s.stats.completeFailed.Add(1)
		s.cfg.Observer.Observe(d.ctx, Event{Kind: KindCompleteFailed, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
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
	ctx := context.WithoutCancel(d.ctx)
	if err := s.dlq.Publish(d.ctx, d.msg, s.info(d, f)); err != nil {
		s.dlqFailed(d, err)
		mctx, cancel := context.WithDeadline(ctx, d.held.deadlineSnapshot(s.keeper))
		start := time.Now()
		merr := s.cfg.Store.MarkDueForDLQ(mctx, d.key, d.held.token, f.Encode())
		cancel()
		s.observeStore(ctx, d.handler, d.topic, OpMarkDueForDLQ, start, merr)
		if merr != nil {
			s.cfg.Logger.Warn("idempo: could not mark the event due for the DLQ; the next delivery runs the handler again",
				"scope", d.scope, "event_id", d.eventID, "error", merr)
		}
		return s.nack(d, fmt.Errorf("%w: %w", ErrDeadLetter, err), true)
	}
	mctx, cancel := context.WithDeadline(ctx, d.held.deadlineSnapshot(s.keeper))
	defer cancel()
	err := retry.Do(mctx, settlePolicy, func(ctx context.Context) error {
		start := time.Now()
		err := s.cfg.Store.MarkDeadLettered(ctx, d.key, d.held.token, s.cfg.Retention)
		s.observeStore(ctx, d.handler, d.topic, OpMarkDeadLettered, start, err)
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
	s.deadLettered(d, f)
	return nil
}

func (s *Stack) deadLetterUnclaimed(d *delivery, f dlq.Failure) error {
	if err := s.dlq.Publish(d.ctx, d.msg, s.info(d, f)); err != nil {
		s.dlqFailed(d, err)
		return s.nack(d, fmt.Errorf("%w: %w", ErrDeadLetter, err), true)
	}
	s.deadLettered(d, f)
	return nil
}

func (s *Stack) deadLettered(d *delivery, f dlq.Failure) {
	s.stats.deadLettered.Add(1)
	s.outcome(d, OutcomeDeadLettered)
	s.cfg.Logger.Warn("idempo: message dead-lettered", "handler", d.handler, "topic", d.topic, "scope", d.scope,
		"event_id", d.eventID, "reason", f.Reason, "error", f.Error, "attempts", f.Attempts, "deliveries", d.res.Deliveries)
}

func (s *Stack) dlqFailed(d *delivery, err error) {
	s.stats.dlqPublishFailed.Add(1)
	s.cfg.Observer.Observe(d.ctx, Event{Kind: KindDLQPublishFailed, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
	s.cfg.Logger.Error("idempo: dead-letter publish failed; nacking", "handler", d.handler, "event_id", d.eventID, "error", err)
}

// cancelled releases the claim without counting the delivery and nacks.
func (s *Stack) cancelled(d *delivery, err error) error {
	if d.held != nil {
		s.release(d, d.held, false)
	}
	return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, err), false)
}

// leaseLost nacks without touching the record: another owner has it.
func (s *Stack) leaseLost(d *delivery, err error) error {
	s.stats.leaseLost.Add(1)
	s.cfg.Observer.Observe(d.ctx, Event{Kind: KindLeaseLost, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
	s.cfg.Logger.Warn("idempo: lease lost while processing; nacked", "scope", d.scope, "event_id", d.eventID, "error", err)
	return s.nack(d, fmt.Errorf("%w: %w", dedup.ErrLeaseLost, err), false)
}

func (s *Stack) release(d *delivery, l *lease, keepCount bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), s.cfg.Lease)
	defer cancel()
	start := time.Now()
	err := s.cfg.Store.Release(ctx, d.key, l.token, keepCount)
	s.observeStore(ctx, d.handler, d.topic, OpRelease, start, err)
	if err != nil {
		s.cfg.Logger.Warn("idempo: releasing the claim failed; it is freed when its lease runs out",
			"scope", d.scope, "event_id", d.eventID, "error", err)
	}
}

// nack counts a failed delivery and returns err for the router to nack.
// With wait, it first waits NackDelay so brokers that redeliver at once do not spin.
func (s *Stack) nack(d *delivery, err error, wait bool) error {
	s.stats.failed.Add(1)
	s.outcome(d, OutcomeFailed)
	if wait {
		s.nackWait(d.ctx, 0)
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
	_ = retry.Wait(ctx, wait)
}

func (s *Stack) outcome(d *delivery, o Outcome) {
	if d.span != nil {
		d.span.SetAttributes(attribute.String("idempo.outcome", string(o)))
		if o == OutcomeFailed || o == OutcomeDeadLettered {
			d.span.SetStatus(codes.Error, string(o))
		}
	}
	s.cfg.Observer.Observe(d.ctx, Event{Kind: KindOutcome, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Outcome: o})
}

func (s *Stack) observeStore(ctx context.Context, handler, topic, op string, start time.Time, err error) {
	if err != nil && !errors.Is(err, dedup.ErrLeaseLost) {
		s.stats.storeErrors.Add(1)
	}
	s.cfg.Observer.Observe(ctx, Event{Kind: KindStoreOp, Handler: handler, Topic: topic, Op: op, Duration: time.Since(start), Err: err})
}
