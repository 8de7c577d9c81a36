package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/retry"
)

// Defaults of [Config].
const (
	defaultLease         = 30 * time.Second
	defaultRetention     = 7 * 24 * time.Hour
	defaultMaxDeliveries = 10
	defaultNackDelay     = 500 * time.Millisecond
)

// rabbitConsumerTimeout is RabbitMQ's default consumer_timeout: a delivery
// unacked for longer closes the channel and is requeued.
const rabbitConsumerTimeout = 30 * time.Minute

// Config configures a [Stack]. Only Store and DLQ.Publisher are required.
type Config struct {
	// Store keeps the dedup records. Required. If it implements
	// [dedup.TxCompleter] and Transactional is set, handlers run in the
	// store's transaction (the transactional inbox).
	Store dedup.Store

	// DLQ configures the dead-letter queue: its Publisher is required
	// (without a DLQ a poison message could only be dropped or looped); its
	// Topic defaults to the original topic + ".dlq". See [dlq.Config].
	DLQ dlq.Config

	// Scope names the consumer in dedup keys. Defaults to the router
	// handler's name, so each handler processes an event once; set it to
	// share one scope across handlers (e.g. K consumers of one queue added as
	// K handlers).
	Scope string
	// EventID extracts the event ID. Defaults to [dedup.UUID] (the Watermill
	// message UUID).
	EventID dedup.Extractor
	// AllowMissingEventID processes messages without an event ID without
	// dedup (retries and the DLQ still apply). Defaults to false: such
	// messages are dead-lettered with reason "missing_event_id".
	AllowMissingEventID bool
	// Fingerprint stores a SHA-256 digest of each payload and dead-letters a
	// message whose event ID was seen with another payload (reason
	// "id_collision"). Defaults to false.
	Fingerprint bool

	// Lease is how long a claim holds without extension. The stack extends it
	// about every Lease/3 while the handler runs and while it waits between
	// retries; if no extension got through by Lease/4 before the lease runs
	// out, the handler's context is cancelled, and a handler must then return
	// within that Lease/4 for no twin to run beside it. Defaults to 30s; at
	// least [MinLease] (1s).
	Lease time.Duration
	// Retention is how long done and dead-lettered records (and delivery
	// counters) are kept. It must cover the longest retry window plus the
	// lease (checked by [New]) and also how far back the broker can
	// redeliver and the DLQ replay horizon (not checkable here): a duplicate
	// arriving after its record expired is processed again. Defaults to 7 days.
	Retention time.Duration
	// MaxDeliveries caps how many acquired claims (across restarts and
	// instances) an event gets; past it the message is dead-lettered with
	// reason "delivery_cap" without running the handler. Nacks for "in
	// progress elsewhere", duplicates, cancellations and store outages do not
	// count. Defaults to 10. The special value -1 disables the cap.
	MaxDeliveries int
	// Retry is the in-process retry policy. Zero value: [retry.Policy] defaults.
	Retry retry.Policy
	// NackDelay is how long the stack waits before nacking a message that is
	// in progress elsewhere (at most the other owner's remaining lease) or
	// that met a store or DLQ outage, so brokers that redeliver at once do not
	// spin. Defaults to 500ms. The special value -1 nacks at once.
	NackDelay time.Duration

	// MaxClaims bounds how many claims the stack holds at once (from claim
	// to settle); a delivery past it waits for a slot before claiming, or
	// is nacked if its context ends first. A subscriber that hands out many
	// messages at once (Kafka's KeyOrder) then cannot queue more claims on
	// the store than it serves before their leases run out. Defaults to the
	// store's ClaimCapacity() when it has one that is > 0 (sqlstore: its
	// connection pool, 1 for SQLite), else no bound. The special value -1
	// disables the bound.
	MaxClaims int

	// Redelivery, if set, adds a delayed-redelivery tier between the
	// in-process retries and the DLQ. Optional; see [Redelivery].
	Redelivery *Redelivery

	// Transactional runs each attempt through the store's
	// [dedup.TxCompleter.CompleteInTx], so the handler's writes through the
	// store's transaction and the completion commit together. New fails if
	// the store does not implement it. Defaults to false.
	Transactional bool

	// OutputPublisher publishes the messages a handler returns, before
	// completion is recorded, with UUIDs derived from the event ID and their
	// index. The router is handed none. Required only for handlers that
	// return messages; a handler returning messages without it is a
	// permanent error.
	OutputPublisher message.Publisher
	// OutputTopic is where outputs go. Defaults to the router handler's
	// publish topic.
	OutputTopic string
	// Outbox, with Transactional, writes the messages a handler returns into
	// the transactional inbox's transaction instead of publishing them:
	// the handler's effect, its outputs and its completion commit together
	// or not at all (consume-transform-produce with exactly-once effects; a
	// relay publishes the outputs later). Outputs get the same derived UUIDs
	// and topic as with OutputPublisher. *outbox.Outbox implements it; it
	// must use the inbox store's database. New refuses it beside
	// OutputPublisher, without Transactional, and with AllowMissingEventID
	// (a message without an event ID is not claimed, so it has no
	// transaction). Optional.
	Outbox TxOutbox

	// Logger receives one line per dead letter, lost lease, ignored ack and
	// store failure. Defaults to slog.Default().
	Logger *slog.Logger
	// Observer receives every outcome and operation, e.g. for metrics
	// (package metrics). Optional.
	Observer Observer
	// TracerProvider, if set, traces each delivery: a consumer span per
	// delivery, child of the trace in the message's traceparent metadata, and
	// a child span per handler attempt, whose context the handler gets. The
	// DLQ copy and handler outputs carry the delivery span's context. Default
	// nil: no tracing and no cost.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.EventID == nil {
		c.EventID = dedup.UUID()
	}
	if c.Lease == 0 {
		c.Lease = defaultLease
	}
	if c.Retention == 0 {
		c.Retention = defaultRetention
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = defaultMaxDeliveries
	}
	if c.NackDelay == 0 {
		c.NackDelay = defaultNackDelay
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.MaxClaims == 0 {
		if cc, ok := c.Store.(claimCapacity); ok {
			c.MaxClaims = max(cc.ClaimCapacity(), 0)
		}
	}
	if c.Redelivery != nil {
		r := *c.Redelivery // the caller's value stays as given
		if r.Topic == nil {
			r.Topic = defaultRedeliveryTopic
		}
		if r.Publisher == nil {
			r.Publisher = c.DLQ.Publisher
		}
		c.Redelivery = &r
	}
}

// claimCapacity is implemented by stores that know how many claims they can
// serve at once (sqlstore: its connection pool); see Config.MaxClaims.
type claimCapacity interface{ ClaimCapacity() int }

// ErrInvalidConfig is matched by every error [New] returns for an invalid Config.
var ErrInvalidConfig = errors.New("middleware: invalid config")

func configError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// Validate reports the first problem with c, naming the field; zero fields
// stand for their defaults, so a Config with only Store and DLQ.Publisher set
// is valid. Errors match [ErrInvalidConfig]. [New] calls it.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Store == nil:
		return configError("Store is required (try memstore.New(nil) for one process, or redisstore/sqlstore)")
	case c.DLQ.Publisher == nil:
		return configError("DLQ.Publisher is required: without a dead-letter queue a poison message could only be dropped or looped")
	case c.Lease < 0:
		return configError("Lease must be > 0, got %v", c.Lease)
	case c.Lease < MinLease:
		return configError("Lease %v is shorter than MinLease (%v): the lease keeper cannot promise to extend it in time on a loaded machine (30s is the default)", c.Lease, MinLease)
	case c.Retention < 0:
		return configError("Retention must be > 0, got %v", c.Retention)
	case c.MaxDeliveries < -1:
		return configError("MaxDeliveries must be >= 1, or -1 to disable the cap, got %d", c.MaxDeliveries)
	case c.NackDelay < -1:
		return configError("NackDelay must be >= 0, or -1 to nack at once, got %v", c.NackDelay)
	case c.MaxClaims < -1:
		return configError("MaxClaims must be >= 1, or -1 to disable the bound, got %d", c.MaxClaims)
	}
	if c.Scope != "" {
		if err := (dedup.Key{Scope: c.Scope, ID: "x"}).Validate(); err != nil {
			return configError("Scope %q cannot name a consumer in dedup keys: %v", c.Scope, err)
		}
	}
	if err := c.Retry.Validate(); err != nil {
		return fmt.Errorf("%w: Retry: %w", ErrInvalidConfig, err)
	}
	window := addSat(c.Retry.MaxTotalWait(), c.Lease)
	if c.Retention < window {
		return configError("Retention %v is shorter than the longest retry window plus the lease (%v): a late duplicate would be processed again", c.Retention, window)
	}
	if r := c.Redelivery; r != nil {
		if len(r.Delays) == 0 {
			return configError("Redelivery.Delays is empty (e.g. 10s, 1m, 10m)")
		}
		var total time.Duration
		for i, d := range r.Delays {
			if d <= 0 {
				return configError("Redelivery.Delays[%d] must be > 0, got %v", i, d)
			}
			total = addSat(total, d)
		}
		if all := addSat(window, total); c.Retention < all {
			return configError("Retention %v is shorter than the retry window plus the lease plus the redelivery delays (%v)", c.Retention, all)
		}
	}
	if c.Outbox != nil {
		switch {
		case c.OutputPublisher != nil:
			return configError("Outbox and OutputPublisher are both set: outputs go either into the inbox's transaction (Outbox) or straight to a publisher, not both")
		case !c.Transactional:
			return configError("Outbox needs Transactional (the SQL transactional inbox): outputs are written in its transaction")
		case c.AllowMissingEventID:
			return configError("Outbox cannot be used with AllowMissingEventID: a message without an event ID is not claimed and has no transaction to write its outputs in")
		}
	}
	if c.Transactional {
		if _, ok := c.Store.(dedup.TxCompleter); !ok {
			return configError("Transactional needs a store implementing dedup.TxCompleter (sqlstore does); %T does not", c.Store)
		}
	}
	return nil
}

// addSat adds two non-negative durations, saturating at the largest one.
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
