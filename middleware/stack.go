package middleware

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
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

// panicError is a recovered handler panic. It is retryable like any error.
type panicError struct {
	Value any
	Stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// Stack is idempo's composed middleware: dedup, retries, dead-lettering and
// ack only after success, in the one correct order. A Stack is safe for
// concurrent use by any number of handlers and router goroutines.
type Stack struct {
	cfg    Config
	dlq    *dlq.Publisher
	keeper *keeper
	stats  counters
	txc    dedup.TxCompleter
	tracer trace.Tracer // nil without Config.TracerProvider
	// observed is false when Config.Observer is the default no-op, so the
	// hot path skips building events and reading the clock for them.
	observed bool
	// claims holds a token per claim held (nil without Config.MaxClaims).
	claims chan struct{}
}

// New validates cfg, applies its defaults and returns a Stack. Errors match
// [ErrInvalidConfig] and name the field.
func New(cfg Config) (*Stack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	router, err := dlq.New(cfg.DLQ)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
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
	if cfg.MaxClaims > 0 {
		s.claims = make(chan struct{}, cfg.MaxClaims)
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

// handle is the processing contract of docs/semantics.md, one phase per
// file: identify (identify.go), claim (claim.go), run the attempts
// (attempts.go), settle (settle.go). It returns nil for the router to ack,
// or the error the router nacks with.
func (s *Stack) handle(h message.HandlerFunc, msg *message.Message) error {
	d := s.newDelivery(msg)
	if s.tracer != nil {
		s.startSpan(d)
		defer d.span.End()
	}
	if settled, err := s.identify(d); settled { // rows "key", "malformed"
		return err
	}
	if d.key.ID == "" { // no event ID, processed without dedup by opt-in
		return s.attempts(h, d, d.ctx)
	}
	if s.claims != nil { // Config.MaxClaims
		select {
		case s.claims <- struct{}{}:
			defer func() { <-s.claims }()
		case <-d.ctx.Done():
			return s.nack(d, fmt.Errorf("%w: waiting for a claim slot: %w", ErrCancelled, d.ctx.Err()))
		}
	}
	l, start, err := s.claim(d) // rows "claim", "done", "dead-lettered earlier", "in progress elsewhere"
	if l == nil {
		return err
	}
	return s.runAcquired(h, d, l, start) // rows "over the delivery cap", "acquired" and after
}
