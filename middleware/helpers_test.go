package middleware_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// capture is a message.Publisher that records what it is given and can be
// told to fail.
type capture struct {
	mu     sync.Mutex
	msgs   map[string][]*message.Message
	fail   atomic.Int32 // fail this many publishes
	before func(topic string, msgs ...*message.Message)
}

func newCapture() *capture { return &capture{msgs: map[string][]*message.Message{}} }

var errPublishDown = errors.New("publisher down")

func (c *capture) Publish(topic string, msgs ...*message.Message) error {
	if c.fail.Load() > 0 {
		c.fail.Add(-1)
		return errPublishDown
	}
	if c.before != nil {
		c.before(topic, msgs...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs[topic] = append(c.msgs[topic], msgs...)
	return nil
}

func (c *capture) Close() error { return nil }

func (c *capture) on(topic string) []*message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*message.Message(nil), c.msgs[topic]...)
}

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		n += len(m)
	}
	return n
}

// faulty wraps a store and injects errors per operation.
type faulty struct {
	dedup.Store
	claimErr, extendErr, completeErr, releaseErr, dueErr, deadErr atomic.Pointer[error]
	completes                                                     atomic.Int32
}

func inject(p *atomic.Pointer[error], err error) {
	if err == nil {
		p.Store(nil)
		return
	}
	p.Store(&err)
}

func get(p *atomic.Pointer[error]) error {
	if e := p.Load(); e != nil {
		return *e
	}
	return nil
}

func (f *faulty) Claim(ctx context.Context, k dedup.Key, r dedup.ClaimRequest) (dedup.ClaimResult, error) {
	if err := get(&f.claimErr); err != nil {
		return dedup.ClaimResult{}, err
	}
	return f.Store.Claim(ctx, k, r)
}

func (f *faulty) Extend(ctx context.Context, k dedup.Key, t dedup.Token, l time.Duration) error {
	if err := get(&f.extendErr); err != nil {
		return err
	}
	return f.Store.Extend(ctx, k, t, l)
}

func (f *faulty) Complete(ctx context.Context, k dedup.Key, t dedup.Token, r time.Duration) error {
	f.completes.Add(1)
	if err := get(&f.completeErr); err != nil {
		return err
	}
	return f.Store.Complete(ctx, k, t, r)
}

func (f *faulty) Release(ctx context.Context, k dedup.Key, t dedup.Token, keep bool) error {
	if err := get(&f.releaseErr); err != nil {
		return err
	}
	return f.Store.Release(ctx, k, t, keep)
}

func (f *faulty) MarkDueForDLQ(ctx context.Context, k dedup.Key, t dedup.Token, n []byte) error {
	if err := get(&f.dueErr); err != nil {
		return err
	}
	return f.Store.MarkDueForDLQ(ctx, k, t, n)
}

func (f *faulty) MarkDeadLettered(ctx context.Context, k dedup.Key, t dedup.Token, r time.Duration) error {
	if err := get(&f.deadErr); err != nil {
		return err
	}
	return f.Store.MarkDeadLettered(ctx, k, t, r)
}

type bundle struct {
	store *faulty
	mem   *memstore.Store
	dlq   *capture
	out   *capture
	stack *middleware.Stack
	calls atomic.Int32
}

const dlqTopic = "idempo.dlq"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func fastRetry() retry.Policy {
	return retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxAttempts: 3}
}

func setup(t *testing.T, mutate ...func(*middleware.Config)) *bundle {
	t.Helper()
	b := &bundle{mem: memstore.New(nil), dlq: newCapture(), out: newCapture()}
	b.store = &faulty{Store: b.mem}
	cfg := middleware.Config{
		Store:           b.store,
		DLQ:             dlq.Config{Publisher: b.dlq},
		OutputPublisher: b.out,
		OutputTopic:     "out",
		Retry:           fastRetry(),
		NackDelay:       time.Millisecond,
		Logger:          quiet,
		Lease:           5 * time.Second,
		Retention:       time.Hour,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := middleware.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	b.stack = s
	return b
}

// run calls the wrapped handler once with msg, as the router would.
func (b *bundle) run(h message.HandlerFunc, msg *message.Message) ([]*message.Message, error) {
	counted := func(m *message.Message) ([]*message.Message, error) {
		b.calls.Add(1)
		return h(m)
	}
	return b.stack.Middleware(counted)(msg)
}

func msg(uuid, payload string) *message.Message {
	m := message.NewMessage(uuid, []byte(payload))
	m.SetContext(context.Background())
	return m
}

func ok(*message.Message) ([]*message.Message, error) { return nil, nil }

func key(id string) dedup.Key { return dedup.Key{Scope: "default", ID: id} }

func claim(t *testing.T, st dedup.Store, id string) dedup.ClaimResult {
	t.Helper()
	res, err := st.Claim(context.Background(), key(id), dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
	require.NoError(t, err)
	return res
}

// within runs fn on its own goroutine and returns its result, or fails the
// test if fn has not returned after timeout (fn's goroutine is then left
// behind, and goleak reports it: the package fails instead of hanging).
func within[T any](t *testing.T, timeout time.Duration, what string, fn func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- fn() }()
	select {
	case v := <-done:
		return v
	case <-time.After(timeout):
		t.Fatalf("%s did not return within %v", what, timeout)
		panic("unreachable")
	}
}

// runWithin calls the wrapped handler once, as b.run does, failing the test
// if it has not returned after timeout.
func (b *bundle) runWithin(t *testing.T, timeout time.Duration, h message.HandlerFunc, m *message.Message) error {
	t.Helper()
	return within(t, timeout, "the delivery of "+m.UUID, func() error {
		_, err := b.run(h, m)
		return err
	})
}

// waitGroup waits for wg, failing the test if it is not done after timeout.
func waitGroup(t *testing.T, wg *sync.WaitGroup, timeout time.Duration, what string) {
	t.Helper()
	within(t, timeout, what, func() struct{} { wg.Wait(); return struct{}{} })
}

// runRouter runs router until the test ends, failing if it does not start or
// stop within 30s.
func runRouter(t *testing.T, router *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the router did not stop within 30s")
		}
	})
	select {
	case <-router.Running():
	case <-time.After(30 * time.Second):
		t.Fatal("the router did not start within 30s")
	}
}

// waitDeadLetters waits until c holds a message, failing after 30s.
func waitDeadLetters(t *testing.T, c *capture, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not dead-lettered within 30s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
