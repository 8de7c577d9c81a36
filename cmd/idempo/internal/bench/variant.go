package bench

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Variant names one of the handlers compared.
type Variant string

// The variants, in the order of the first round.
const (
	// Bare is a router handler with no middleware.
	Bare Variant = "bare"
	// Watermill is Watermill's PoisonQueue wrapping Retry wrapping a
	// Deduplicator keyed by message UUID.
	Watermill Variant = "watermill"
	// Idempo is idempo's stack on the opened store.
	Idempo Variant = "idempo"
	// Sequential is idempo's stack with the Kafka subscriber in
	// PartitionOrder, the baseline of another --ordering.
	Sequential Variant = "sequential"
)

// variants is the order of the first round; later rounds rotate it.
var variants = [...]Variant{Bare, Watermill, Idempo}

// Retry settings shared by both retrying variants: up to 4 attempts, 1ms
// then doubling up to 10ms. No handler fails in the benchmark, so they
// only have to be comparable.
const (
	retryInitial = time.Millisecond
	retryMax     = 10 * time.Millisecond
	retryTries   = 4
)

// retention is how long the idempo variant keeps its records. Redis keys
// are also removed when the run ends; SQL tables are dropped.
const retention = time.Hour

// middlewares returns the chain of variant v for the round named name (the
// topic, which also names the dedup scope) and a function releasing it,
// which returns the number of leases the idempo stack lost (0 for the
// variants without one).
func (r *runner) middlewares(v Variant, name string) ([]message.HandlerMiddleware, func() int64, error) {
	switch v {
	case Watermill:
		poison, err := wmw.PoisonQueue(r.broker.Publisher, name+".poison")
		if err != nil {
			return nil, nil, err
		}
		rt := wmw.Retry{MaxRetries: retryTries - 1, InitialInterval: retryInitial, MaxInterval: retryMax, Multiplier: 2}
		dd := &wmw.Deduplicator{
			KeyFactory: func(m *message.Message) (string, error) { return m.UUID, nil },
			Repository: newKeyRepo(retention),
			Timeout:    time.Second,
		}
		return []message.HandlerMiddleware{poison, rt.Middleware, dd.Middleware}, func() int64 { return 0 }, nil
	case NoInbox:
		return []message.HandlerMiddleware{r.ownTx}, func() int64 { return 0 }, nil
	case Idempo, Sequential:
		stack, err := middleware.New(middleware.Config{
			Transactional: r.opts.Inbox,
			Store:         r.store.Store,
			DLQ:           dlq.Config{Publisher: r.broker.Publisher},
			Scope:         name,
			Retention:     retention,
			Retry:         retry.Policy{InitialInterval: retryInitial, MaxInterval: retryMax, MaxAttempts: retryTries},
			NackDelay:     5 * time.Millisecond,
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			return nil, nil, err
		}
		mws := []message.HandlerMiddleware{stack.Middleware}
		if r.opts.Inbox {
			mws = append(mws, r.inboxWrite)
		}
		return mws, func() int64 {
			_ = stack.Close()
			return stack.Stats().LeaseLost
		}, nil
	default:
		return nil, func() int64 { return 0 }, nil
	}
}

// chain wraps h in mws, the first outermost (as Handler.AddMiddleware does).
func chain(h message.HandlerFunc, mws []message.HandlerMiddleware) message.HandlerFunc {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// keyRepo is Watermill's NewMapExpiringKeyRepository (a map behind a
// mutex, remembering each key for a window) without its clean-up
// goroutine: Watermill starts that one on context.Background, so it can
// never stop, and a repository per round would leak one goroutine each.
// Rounds last far less than the window, so the clean-up would never find
// anything to remove; IsDuplicate is the same code.
type keyRepo struct {
	window time.Duration
	mu     sync.Mutex
	tags   map[string]time.Time
}

var _ wmw.ExpiringKeyRepository = (*keyRepo)(nil)

func newKeyRepo(window time.Duration) *keyRepo {
	return &keyRepo{window: window, tags: make(map[string]time.Time)}
}

// IsDuplicate reports whether key was seen before and remembers it.
func (r *keyRepo) IsDuplicate(_ context.Context, key string) (bool, error) {
	r.mu.Lock()
	_, seen := r.tags[key]
	if seen {
		r.mu.Unlock()
		return true, nil
	}
	r.tags[key] = time.Now().Add(r.window)
	r.mu.Unlock()
	return false, nil
}
