package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/retry"
	"github.com/idempo/idempo/tracing"
)

// Defaults of [RelayConfig].
const (
	DefaultBatchSize       = 256
	DefaultPollInterval    = 25 * time.Millisecond
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
	// moved to the dead table. Defaults to [DefaultMaxAttempts].
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

// Relay publishes an outbox's committed rows. Several relays (in one or
// many processes) may run on one table.
type Relay struct {
	o        *Outbox
	cfg      RelayConfig
	tracer   trace.Tracer
	owner    string // Name plus a random suffix, in the lease rows
	presence int    // this relay's own row in the lease table (< 0)

	mu     sync.Mutex
	owned  map[int]bucketLease
	ptoken int64 // token of the presence row

	busy sync.Mutex // held by a batch; voluntary releases wait for it
	wake chan struct{}
	ran  atomic.Bool

	published, failures, dead, batches atomic.Int64
}

// bucketLease is a bucket this relay holds.
type bucketLease struct {
	token int64
	until time.Time // local deadline: the relay publishes the bucket only before it
}

// NewRelay returns a relay of o. Invalid configuration gives an error
// matching [ErrInvalidConfig] naming the field.
func NewRelay(o *Outbox, cfg RelayConfig) (*Relay, error) {
	if o == nil {
		return nil, fmt.Errorf("%w: nil *Outbox", ErrInvalidConfig)
	}
	bad := func(format string, args ...any) (*Relay, error) {
		return nil, fmt.Errorf("%w: RelayConfig."+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if cfg.Publisher == nil {
		return bad("Publisher is required")
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if len(cfg.Name) > 200 {
		return bad("Name is longer than 200 bytes (%d)", len(cfg.Name))
	}
	switch {
	case cfg.BatchSize == 0:
		cfg.BatchSize = DefaultBatchSize
	case cfg.BatchSize < 0 || cfg.BatchSize > 10000:
		return bad("BatchSize must be in [1, 10000], got %d", cfg.BatchSize)
	}
	switch {
	case cfg.PollInterval == 0:
		cfg.PollInterval = DefaultPollInterval
	case cfg.PollInterval < 0:
		return bad("PollInterval cannot be negative, got %v", cfg.PollInterval)
	}
	switch {
	case cfg.Lease == 0:
		cfg.Lease = DefaultLease
	case cfg.Lease < MinLease:
		return bad("Lease must be at least %v, got %v", MinLease, cfg.Lease)
	}
	switch {
	case cfg.MaxAttempts == 0:
		cfg.MaxAttempts = DefaultMaxAttempts
	case cfg.MaxAttempts < 0:
		return bad("MaxAttempts cannot be negative, got %d", cfg.MaxAttempts)
	}
	if cfg.Backoff.InitialInterval == 0 {
		cfg.Backoff.InitialInterval = DefaultInitialInterval
	}
	if cfg.Backoff.MaxInterval == 0 {
		cfg.Backoff.MaxInterval = max(DefaultMaxInterval, cfg.Backoff.InitialInterval)
	}
	switch {
	case cfg.Backoff.InitialInterval < 0:
		return bad("Backoff.InitialInterval cannot be negative, got %v", cfg.Backoff.InitialInterval)
	case cfg.Backoff.MaxInterval < cfg.Backoff.InitialInterval:
		return bad("Backoff.MaxInterval (%v) must be >= Backoff.InitialInterval (%v)", cfg.Backoff.MaxInterval, cfg.Backoff.InitialInterval)
	}
	if cfg.Retention < 0 {
		return bad("Retention cannot be negative, got %v", cfg.Retention)
	}
	if cfg.Permanent == nil {
		cfg.Permanent = retry.IsPermanent
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	return &Relay{
		o: o, cfg: cfg,
		tracer: o.opts.TracerProvider.Tracer(tracing.InstrumentationName),
		owned:  map[int]bucketLease{},
		wake:   make(chan struct{}, 1),
	}, nil
}

var errRunTwice = errors.New("outbox: Relay.Run called twice")

// Run leases buckets and publishes their rows until ctx ends, then releases
// its leases and returns nil. It returns an error only when it cannot start
// (the tables are missing, the database is unreachable). Call it once per
// Relay.
func (r *Relay) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errRunTwice
	}
	if err := r.register(ctx); err != nil {
		return r.o.wrap("relay start", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { //nolint:contextcheck // ctx has ended; the leases are given back anyway
		cancel()
		wg.Wait()
		r.releaseAll()
	}()
	r.leaseTick(ctx)
	wg.Go(func() { r.leaseLoop(ctx) })
	if r.cfg.Notify && r.o.dialect == sqlstore.Postgres {
		wg.Go(func() { r.listen(ctx) })
	}
	r.publishLoop(ctx)
	return nil
}

// Stats returns the relay's counters. Safe for concurrent use.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published: r.published.Load(), Failures: r.failures.Load(),
		Dead: r.dead.Load(), Batches: r.batches.Load(),
	}
}

func (r *Relay) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// sleep waits for d, a wake-up, or the end of ctx.
func (r *Relay) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-r.wake:
	case <-t.C:
	}
}

func (r *Relay) publishLoop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		snap := r.snapshot()
		if len(snap) == 0 {
			r.sleep(ctx, r.cfg.PollInterval)
			continue
		}
		r.busy.Lock()
		n, err := r.batch(ctx, snap)
		r.busy.Unlock()
		switch {
		case err != nil && ctx.Err() == nil:
			failures++
			r.cfg.Logger.Error("outbox relay: batch failed", err, watermill.LogFields{"table": r.o.table, "relay": r.owner})
			r.sleep(ctx, min(r.cfg.PollInterval<<min(failures, 10), 5*time.Second))
		case n < r.cfg.BatchSize:
			failures = 0
			r.sleep(ctx, r.cfg.PollInterval)
		default:
			failures = 0
		}
	}
}

func (r *Relay) observe(kind RelayEventKind, topic string, n int, err error) {
	if r.cfg.Observer != nil {
		r.cfg.Observer(RelayEvent{Kind: kind, Topic: topic, Count: n, Err: err})
	}
}

// backoff is the wait after the attempts-th failure of a row.
func (r *Relay) backoff(attempts int) time.Duration {
	w := r.cfg.Backoff.InitialInterval
	for i := 1; i < attempts && w < r.cfg.Backoff.MaxInterval; i++ {
		w *= 2
	}
	w = min(w, r.cfg.Backoff.MaxInterval)
	if w <= 0 {
		return 0
	}
	return w/2 + rand.N(w)
}
