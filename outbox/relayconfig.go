package outbox

import (
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Defaults of [RelayConfig].
const (
	DefaultBatchSize       = 1024
	DefaultPollInterval    = 10 * time.Millisecond
	DefaultLease           = 10 * time.Second
	MinLease               = time.Second
	DefaultMaxAttempts     = 10
	DefaultInitialInterval = 100 * time.Millisecond
	DefaultMaxInterval     = 10 * time.Second
)

// Backoff is the wait before a failed row is published again: InitialInterval
// after the first failure, doubling up to MaxInterval, each wait drawn
// uniformly from [w/2, 3w/2).
type Backoff struct {
	// InitialInterval defaults to [DefaultInitialInterval].
	InitialInterval time.Duration
	// MaxInterval defaults to [DefaultMaxInterval]; must be >= InitialInterval.
	MaxInterval time.Duration
}

// RelayConfig configures a [Relay]. The zero value means the defaults, except
// Publisher, which is required.
type RelayConfig struct {
	// Publisher receives the rows (required). Publish is called with the
	// rows of one topic in id order; it must return only once the broker
	// has them.
	Publisher message.Publisher
	// Name identifies the relay in the lease rows (with a random suffix per
	// Run). Defaults to "<hostname>-<pid>".
	Name string
	// BatchSize is the number of rows fetched, published and marked at a
	// time. Defaults to [DefaultBatchSize].
	BatchSize int
	// PollInterval is how often a relay looks for new rows when the last
	// batch was not full and no notification came. Defaults to
	// [DefaultPollInterval].
	PollInterval time.Duration
	// Lease is how long a bucket stays leased without renewal; relays renew
	// every Lease/3. A dead relay's buckets are taken over after it.
	// Defaults to [DefaultLease]; at least [MinLease].
	Lease time.Duration
	// Notify makes the relay LISTEN for writers' notifications on
	// PostgreSQL (see [Options].Notify) and wake at once; polling goes on as
	// a fallback. Ignored on MySQL and SQLite. Defaults to false.
	Notify bool
	// MaxAttempts is the number of failed publishes after which a row is
	// moved to the dead table. Defaults to [DefaultMaxAttempts]. A batch in
	// which every row tried failed, in more than one key and never
	// permanently, is taken for a publisher outage: its rows wait a backoff
	// that grows with the outage and their attempts are not counted.
	MaxAttempts int
	// Backoff spaces the attempts of a failing row.
	Backoff Backoff
	// Permanent reports whether a publish error is permanent (the row goes
	// to the dead table at once). Defaults to retry.IsPermanent.
	Permanent func(error) bool
	// Retention keeps sent rows (with sent_at set) for this long before
	// they are deleted in batches. Defaults to 0: a row is deleted by the
	// statement that marks it sent.
	Retention time.Duration
	// Observer, when set, is called synchronously after each publish
	// outcome; it must be fast and safe for concurrent use.
	Observer func(RelayEvent)
	// Logger defaults to watermill.NopLogger.
	Logger watermill.LoggerAdapter
}

// RelayEventKind is what a [RelayEvent] reports.
type RelayEventKind int

// Kinds of [RelayEvent].
const (
	// EventPublished: Count rows of Topic were published and marked.
	EventPublished RelayEventKind = iota + 1
	// EventFailed: a row of Topic failed to publish and will be retried.
	EventFailed
	// EventDead: a row of Topic was moved to the dead table.
	EventDead
)

// RelayEvent is a publish outcome reported to [RelayConfig].Observer.
type RelayEvent struct {
	Kind  RelayEventKind
	Topic string
	Count int
	Err   error // the publish error (EventFailed, EventDead)
}

// RelayStats are a relay's counters since it was built.
type RelayStats struct {
	Published int64 // rows published and marked
	Failures  int64 // failed row publishes
	Dead      int64 // rows moved to the dead table
	Batches   int64 // batches fetched with at least one row
}
