package middleware

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/idempo/idempo/dedup"
)

// Outcome is how the stack finished with one delivery.
type Outcome string

// The outcomes of a delivery. Each delivery ends in exactly one of them.
const (
	// OutcomeProcessed: the handler succeeded and the message was acked.
	OutcomeProcessed Outcome = "processed"
	// OutcomeDuplicate: the event was done or dead-lettered earlier; acked
	// without running the handler.
	OutcomeDuplicate Outcome = "duplicate"
	// OutcomeInProgress: another owner holds the claim; nacked.
	OutcomeInProgress Outcome = "in_progress_nacked"
	// OutcomeDeadLettered: the message is safely in the DLQ; acked.
	OutcomeDeadLettered Outcome = "dead_lettered"
	// OutcomeRedelivered: retries exhausted; the message was published to a
	// delayed-redelivery tier and acked.
	OutcomeRedelivered Outcome = "redelivered"
	// OutcomeFailed: nacked for any other reason (store or DLQ outage,
	// cancellation, lost lease, output publish failure).
	OutcomeFailed Outcome = "failed"
)

// Outcomes lists every outcome, for pre-registering metric series.
var Outcomes = []Outcome{OutcomeProcessed, OutcomeDuplicate, OutcomeInProgress, OutcomeDeadLettered, OutcomeRedelivered, OutcomeFailed}

// Kind says what an [Event] reports.
type Kind int

// Event kinds.
const (
	// KindOutcome: a delivery ended with Event.Outcome.
	KindOutcome Kind = iota + 1
	// KindRetry: an attempt failed and another will follow after Event.Duration.
	KindRetry
	// KindAttempt: a handler attempt ended after Event.Duration with Event.Err.
	KindAttempt
	// KindStoreOp: a store call (Event.Op) took Event.Duration and returned Event.Err.
	KindStoreOp
	// KindLeaseExtended: a lease was extended.
	KindLeaseExtended
	// KindLeaseLost: a lease was lost (taken over, or not extended in time).
	KindLeaseLost
	// KindCompleteFailed: the handler succeeded but completion could not be
	// recorded; the message was acked anyway.
	KindCompleteFailed
	// KindDLQPublishFailed: publishing a dead-letter copy failed; nacked.
	KindDLQPublishFailed
	// KindIgnoredAck: the handler called Ack or Nack on its copy (a no-op).
	KindIgnoredAck
)

// Store operations, as [Event.Op] names them in [KindStoreOp] events.
const (
	opClaim            = "claim"
	opExtend           = "extend"
	opComplete         = "complete"
	opRelease          = "release"
	opMarkDueForDLQ    = "mark_due_for_dlq"
	opMarkDeadLettered = "mark_dead_lettered"
	opCompleteInTx     = "complete_in_tx"
)

// StoreOps lists every store operation [Event.Op] can name in a
// [KindStoreOp] event ("claim", "extend", "complete", "release",
// "mark_due_for_dlq", "mark_dead_lettered", "complete_in_tx"), for
// pre-registering metric series. Do not modify it.
var StoreOps = []string{opClaim, opExtend, opComplete, opRelease, opMarkDueForDLQ, opMarkDeadLettered, opCompleteInTx}

// Event is one thing the stack reports to an [Observer].
type Event struct {
	Kind     Kind
	Handler  string
	Topic    string
	EventID  string
	Outcome  Outcome
	Op       string
	Duration time.Duration
	Err      error
}

// Observer receives events from the stack, e.g. to export metrics. Observe is
// called synchronously on the handler's goroutine (and on the lease keeper's
// for lease events); it must be quick and safe for concurrent use.
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// ObserverFunc adapts a function to an [Observer].
type ObserverFunc func(ctx context.Context, e Event)

// Observe calls f.
func (f ObserverFunc) Observe(ctx context.Context, e Event) { f(ctx, e) }

type nopObserver struct{}

func (nopObserver) Observe(context.Context, Event) {}

// Stats are the stack's running totals since [New]. All fields count events
// of the kind their name gives.
type Stats struct {
	Processed        int64
	Duplicates       int64
	InProgressNacked int64
	DeadLettered     int64
	Redelivered      int64
	Failed           int64
	Retries          int64
	Attempts         int64
	Panics           int64
	LeaseExtensions  int64
	LeaseLost        int64
	CompleteFailed   int64
	DLQPublishFailed int64
	StoreErrors      int64
	IgnoredAcks      int64
}

type counters struct {
	processed, duplicates, inProgress, deadLettered, failed atomic.Int64
	redelivered                                             atomic.Int64
	retries, attempts, panics                               atomic.Int64
	leaseExtensions, leaseLost, completeFailed              atomic.Int64
	dlqPublishFailed, storeErrors, ignoredAcks              atomic.Int64
}

// add counts e.
func (c *counters) add(e Event) {
	switch e.Kind {
	case KindOutcome:
		switch e.Outcome {
		case OutcomeProcessed:
			c.processed.Add(1)
		case OutcomeDuplicate:
			c.duplicates.Add(1)
		case OutcomeInProgress:
			c.inProgress.Add(1)
		case OutcomeDeadLettered:
			c.deadLettered.Add(1)
		case OutcomeRedelivered:
			c.redelivered.Add(1)
		case OutcomeFailed:
			c.failed.Add(1)
		}
	case KindRetry:
		c.retries.Add(1)
	case KindAttempt:
		c.attempts.Add(1)
		if e.Err != nil && isPanic(e.Err) {
			c.panics.Add(1)
		}
	case KindStoreOp:
		if e.Err != nil && !errors.Is(e.Err, dedup.ErrLeaseLost) {
			c.storeErrors.Add(1)
		}
	case KindLeaseExtended:
		c.leaseExtensions.Add(1)
	case KindLeaseLost:
		c.leaseLost.Add(1)
	case KindCompleteFailed:
		c.completeFailed.Add(1)
	case KindDLQPublishFailed:
		c.dlqPublishFailed.Add(1)
	case KindIgnoredAck:
		c.ignoredAcks.Add(1)
	}
}

// isPanic reports whether err is a recovered handler panic. Its target
// escapes to the heap, so it is asked only of failed attempts.
func isPanic(err error) bool {
	var pe *panicError
	return errors.As(err, &pe)
}

func (c *counters) snapshot() Stats {
	return Stats{
		Processed:        c.processed.Load(),
		Duplicates:       c.duplicates.Load(),
		InProgressNacked: c.inProgress.Load(),
		DeadLettered:     c.deadLettered.Load(),
		Redelivered:      c.redelivered.Load(),
		Failed:           c.failed.Load(),
		Retries:          c.retries.Load(),
		Attempts:         c.attempts.Load(),
		Panics:           c.panics.Load(),
		LeaseExtensions:  c.leaseExtensions.Load(),
		LeaseLost:        c.leaseLost.Load(),
		CompleteFailed:   c.completeFailed.Load(),
		DLQPublishFailed: c.dlqPublishFailed.Load(),
		StoreErrors:      c.storeErrors.Load(),
		IgnoredAcks:      c.ignoredAcks.Load(),
	}
}
