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
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/retry"
	"github.com/idempo/idempo/tracing"
)

// Relay publishes an outbox's committed rows. Several relays (in one or
// many processes) may run on one table.
type Relay struct {
	o      *Outbox
	cfg    RelayConfig
	tracer trace.Tracer
	owner  string // Name plus a random suffix, in the lease rows

	mu       sync.Mutex
	owned    map[int]bucketLease
	presence int   // this relay's own row in the lease table (< 0)
	ptoken   int64 // token of the presence row

	busy    sync.Mutex // held by a batch; voluntary releases wait for it
	outages int        // consecutive batches taken for a publisher outage (under busy)
	wake    chan struct{}
	ran     atomic.Bool

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
		owner:  fmt.Sprintf("%s/%06x", cfg.Name, rand.IntN(1<<24)),
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
		if w > r.cfg.Backoff.MaxInterval/2 {
			w = r.cfg.Backoff.MaxInterval
			break
		}
		w *= 2
	}
	w = min(w, r.cfg.Backoff.MaxInterval)
	if w <= 0 {
		return 0
	}
	return w/2 + rand.N(w)
}
