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
	// observed is false when Config.Observer is the default no-op, so the
	// hot path skips building events and reading the clock for them.
	observed bool
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
	_, nop := cfg.Observer.(nopObserver)
	s := &Stack{cfg: cfg, dlq: router, observed: !nop}
	if cfg.Transactional {
		s.txc = cfg.Store.(dedup.TxCompleter)
	}
	if w := cfg.Retry.MaxTotalWait(); w > rabbitConsumerTimeout/2 {
		cfg.Logger.Warn("idempo: the retry window is long; RabbitMQ closes channels whose deliveries stay unacked for consumer_timeout (30 min by default)",
			"max_total_wait", w)
	}
	warnVolatileDLQ(cfg)
	if cfg.TracerProvider != nil {
		s.tracer = cfg.TracerProvider.Tracer(tracing.InstrumentationName)
	}
	s.keeper = newKeeper(s, realClock{})
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

// The hot path (handle → runAcquired → attempts → attempt → runOnce → call)
// keeps its frames small: every rare branch (tracing, bad IDs, store errors,
// collisions, in-progress) lives in a function of its own, so the router's
// per-message goroutine rarely has to grow its stack.

func (s *Stack) handle(h message.HandlerFunc, msg *message.Message) error {
	d := s.newDelivery(msg)
	if s.tracer != nil {
		s.startSpan(d)
		defer d.span.End()
	}
	if settled, err := s.identify(d); settled {
		return err
	}
	if d.key.ID == "" {
		return s.runUnclaimed(h, d)
	}
	var fp []byte
	if s.cfg.Fingerprint {
		fp = fingerprint(msg)
	}
	for {
		l := d.resetGate(s.keeper.newToken())
		if wait := s.keeper.enter(l); wait != nil {
			if err := s.waitTwin(d, wait); err != nil {
				return err
			}
			continue
		}
		start := s.keeper.clk.Now() // the lease counts from before the claim is sent
		res, err := s.cfg.Store.Claim(d.ctx, d.key, dedup.ClaimRequest{
			Token:       l.token,
			Lease:       s.cfg.Lease,
			Retention:   s.cfg.Retention,
			Fingerprint: fp,
			ReplayID:    msg.Metadata.Get(dlq.KeyReplayID),
		})
		s.observeStore(d.ctx, d.handler, d.topic, OpClaim, start, err)
		if err != nil || res.Status != dedup.StatusAcquired {
			s.keeper.unregister(l)
		}
		if err != nil {
			return s.claimFailed(d, err)
		}
		d.res = res
		if fp != nil && len(res.Fingerprint) > 0 && !bytes.Equal(fp, res.Fingerprint) {
			return s.collision(d, l)
		}
		switch res.Status {
		case dedup.StatusAcquired:
			return s.runAcquired(h, d, l, start)
		case dedup.StatusDone, dedup.StatusDeadLettered:
			s.stats.duplicates.Add(1)
			s.outcome(d, OutcomeDuplicate)
			return nil
		case dedup.StatusInProgress:
			return s.inProgress(d)
		default:
			return s.unknownStatus(d)
		}
	}
}

func (s *Stack) unknownStatus(d *delivery) error {
	return s.nack(d, fmt.Errorf("%w: claim returned unknown status %v", ErrStore, d.res.Status))
}

// fingerprint is dedup.Fingerprint kept out of line, so its hash state is
// not part of the handler's stack frame.
//
//go:noinline
func fingerprint(msg *message.Message) []byte { return dedup.Fingerprint(msg) }

// resetGate makes the delivery's gate a fresh lease of its key under token.
//
//go:noinline
func (d *delivery) resetGate(token dedup.Token) *lease {
	d.gate = lease{key: d.key, token: token, handler: d.handler, topic: d.topic}
	return &d.gate
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
func (s *Stack) identify(d *delivery) (settled bool, err error) {
	if reason := d.msg.Metadata.Get(dlq.KeyMalformed); reason != "" {
		return true, s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMalformed, Error: reason})
	}
	id, err := s.cfg.EventID(d.msg)
	if err == nil && id == "" {
		err = dedup.ErrMissingEventID
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
		d.eventID = dlq.ShortEventID(id)
		return true, s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonInvalidEventID, Error: err.Error()})
	}
	if s.cfg.AllowMissingEventID && errors.Is(err, dedup.ErrMissingEventID) {
		return false, nil
	}
	return true, s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMissingEventID, Error: err.Error()})
}

// waitTwin waits for the twin in this process that holds the key's gate.
func (s *Stack) waitTwin(d *delivery, wait <-chan struct{}) error {
	select {
	case <-wait:
		return nil
	case <-d.ctx.Done():
		return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, d.ctx.Err()))
	}
}

func (s *Stack) claimFailed(d *delivery, err error) error {
	if d.ctx.Err() != nil {
		return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, err))
	}
	s.cfg.Logger.Warn("idempo: dedup store claim failed; nacking", "scope", d.scope, "event_id", d.eventID, "error", err)
	return s.nack(d, fmt.Errorf("%w: claim: %w", ErrStore, err))
}

// collision dead-letters a payload whose event ID was seen with another one.
func (s *Stack) collision(d *delivery, l *lease) error {
	if d.res.Status == dedup.StatusAcquired {
		// The record belongs to the first payload: give it back untouched.
		s.release(d, l, false)
		s.keeper.unregister(l)
	}
	return s.deadLetterUnclaimed(d, dlq.Failure{
		Reason: dlq.ReasonIDCollision,
		Error:  "event ID " + strconv.Quote(d.eventID) + " was seen before with another payload",
	})
}

func (s *Stack) inProgress(d *delivery) error {
	s.stats.inProgress.Add(1)
	s.outcome(d, OutcomeInProgress)
	s.nackWait(d.ctx, d.res.LeaseRemaining)
	return ErrInProgressElsewhere
}

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
		s.observeAttempt(hctx, d, start, err)
		if err == nil {
			return s.succeed(d, outs)
		}
		wait, settled, serr := s.failed(d, hctx, err, stack, start, &sched)
		if settled {
			return serr
		}
		if werr := retry.Wait(hctx, wait); werr != nil {
			if c := context.Cause(hctx); errors.Is(c, dedup.ErrLeaseLost) || errors.Is(c, errLeaseExpired) {
				return s.leaseLost(d, c)
			}
			return s.cancelled(d, werr)
		}
	}
}

func (s *Stack) observeAttempt(ctx context.Context, d *delivery, start time.Time, err error) {
	if !s.observed {
		return
	}
	s.cfg.Observer.Observe(ctx, Event{Kind: KindAttempt, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Duration: time.Since(start), Err: err})
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
	class := s.cfg.Retry.Classify(err)
	d.fail.ErrorClass = class.String()
	if stack != nil {
		d.fail.ErrorClass = "panic"
		d.fail.PanicStack = string(stack)
	}
	// A handler's own context.Canceled (or a classifier's Cancelled) while
	// nothing of the stack's is done is an ordinary failure: retried,
	// counted and capped. Only the stack's own contexts (checked above)
	// mean cancellation.
	switch class {
	case retry.PermanentClass:
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
	s.stats.retries.Add(1)
	s.cfg.Observer.Observe(hctx, Event{Kind: KindRetry, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Duration: wait, Err: err})
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
	if stack != nil {
		s.stats.panics.Add(1)
	}
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
	switch {
	case s.cfg.OutputPublisher == nil:
		return retry.Permanent(fmt.Errorf("idempo: handler returned %d messages but Config.OutputPublisher is not set", len(outs)))
	case topic == "":
		return retry.Permanent(fmt.Errorf("idempo: handler returned %d messages but neither Config.OutputTopic nor the router handler's publish topic is set", len(outs)))
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
	s.keeper.settle(d.held)
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
		return s.nack(d, fmt.Errorf("%w: %w", ErrDeadLetter, err))
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
		return s.nack(d, fmt.Errorf("%w: %w", ErrDeadLetter, err))
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
	return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, err))
}

// leaseLost nacks without touching the record: another owner has it.
func (s *Stack) leaseLost(d *delivery, err error) error {
	s.stats.leaseLost.Add(1)
	s.cfg.Observer.Observe(d.ctx, Event{Kind: KindLeaseLost, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Err: err})
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
	s.observeStore(ctx, d.handler, d.topic, OpRelease, start, err)
	if err != nil {
		s.cfg.Logger.Warn("idempo: releasing the claim failed; it is freed when its lease runs out",
			"scope", d.scope, "event_id", d.eventID, "error", err)
	}
}

// nack counts a failed delivery and returns err for the router to nack.
// Every nack first waits NackDelay, so brokers that redeliver at once do not
// spin; the wait ends at once when the message's context is done (shutdown,
// rebalance, revoked partition).
func (s *Stack) nack(d *delivery, err error) error {
	s.stats.failed.Add(1)
	s.outcome(d, OutcomeFailed)
	s.nackWait(d.ctx, 0)
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
	if !s.observed {
		return
	}
	s.cfg.Observer.Observe(d.ctx, Event{Kind: KindOutcome, Handler: d.handler, Topic: d.topic, EventID: d.eventID, Outcome: o})
}

func (s *Stack) observeStore(ctx context.Context, handler, topic, op string, start time.Time, err error) {
	if err != nil && !errors.Is(err, dedup.ErrLeaseLost) {
		s.stats.storeErrors.Add(1)
	}
	if !s.observed {
		return
	}
	s.cfg.Observer.Observe(ctx, Event{Kind: KindStoreOp, Handler: handler, Topic: topic, Op: op, Duration: time.Since(start), Err: err})
}
