package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// lateExtend is a store whose Extend answers only after the completion was
// recorded (or the claim released), as when an extension is in flight while
// the handler finishes.
type lateExtend struct {
	dedup.Store
	completed chan struct{} // closed when the completion is recorded or the claim released
	answered  chan struct{} // closed when the first extension answered
	extended  chan error    // the first extension's answer
	once      sync.Once
	completer sync.Once // a second completion must not close completed again
	extends   atomic.Int32
}

// lateWait bounds every wait of the wrapper stores below, so a stack that
// never extends (or never completes) fails the test instead of hanging it.
const lateWait = 10 * time.Second

// errNoExtension is returned by a completion that waited lateWait for an
// extension that never came.
var errNoExtension = errors.New("no extension answered while the completion waited")

func (s *lateExtend) markCompleted() { s.completer.Do(func() { close(s.completed) }) }

func newLateExtend(st dedup.Store) *lateExtend {
	return &lateExtend{Store: st, completed: make(chan struct{}), answered: make(chan struct{}), extended: make(chan error, 1)}
}

func (s *lateExtend) Extend(ctx context.Context, k dedup.Key, t dedup.Token, l time.Duration) error {
	select {
	case <-s.completed:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(lateWait):
		return errors.New("the completion was never recorded")
	}
	s.extends.Add(1)
	err := s.Store.Extend(ctx, k, t, l)
	s.once.Do(func() {
		s.extended <- err
		close(s.answered)
	})
	return err
}

func (s *lateExtend) Complete(ctx context.Context, k dedup.Key, t dedup.Token, r time.Duration) error {
	err := s.Store.Complete(ctx, k, t, r)
	s.markCompleted()
	return err
}

func (s *lateExtend) Release(ctx context.Context, k dedup.Key, t dedup.Token, keep bool) error {
	err := s.Store.Release(ctx, k, t, keep)
	s.markCompleted()
	return err
}

// lateExtendTx is lateExtend for the transactional inbox: the commit returns
// to the stack only after the keeper had the extension's answer, so the
// keeper judges it before anything after the commit runs.
type lateExtendTx struct {
	*lateExtend
	tx *sqlstore.Store
}

func (s *lateExtendTx) CompleteInTx(ctx context.Context, k dedup.Key, t dedup.Token, r time.Duration, fn func(context.Context) error) error {
	err := s.tx.CompleteInTx(ctx, k, t, r, fn)
	s.markCompleted()
	select {
	case <-s.answered:
	case <-time.After(lateWait):
		// The caller sees the failure; raceCompletion then fails on the
		// missing extension with its own message.
		// Permanent, so the stack does not retry into the same wait.
		return retry.Permanent(errors.Join(err, errNoExtension))
	}
	time.Sleep(50 * time.Millisecond) // the keeper handles the answer
	return err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// raceCompletion runs one message whose handler outlasts a third of the
// lease through a stack on st, so that the keeper's extension is in flight
// when the completion is recorded, and checks that this race loses no lease:
// nothing counted, logged or observed as lost, and no further extension.
func raceCompletion(t *testing.T, st dedup.Store, late *lateExtend, transactional bool, h message.HandlerFunc) {
	t.Helper()
	var logs syncBuffer
	var mu sync.Mutex
	var kinds []middleware.Kind
	stack, err := middleware.New(middleware.Config{
		Store:         st,
		DLQ:           dlq.Config{Publisher: newCapture()},
		Transactional: transactional,
		Lease:         middleware.MinLease, // extended every 333 ms
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
		Observer: middleware.ObserverFunc(func(_ context.Context, e middleware.Event) {
			mu.Lock()
			kinds = append(kinds, e.Kind)
			mu.Unlock()
		}),
	})
	require.NoError(t, err)
	defer stack.Close()

	slow := func(m *message.Message) ([]*message.Message, error) {
		time.Sleep(600 * time.Millisecond) // the keeper's extension starts meanwhile
		return h(m)
	}
	err = within(t, 30*time.Second, "the raced delivery", func() error {
		_, err := stack.Middleware(slow)(msg("raced", "p"))
		return err
	})
	require.NoError(t, err)
	select {
	case err := <-late.extended:
		require.ErrorIs(t, err, dedup.ErrLeaseLost, "the extension found the record completed")
	case <-time.After(5 * time.Second):
		t.Fatal("no extension ran while the handler did")
	}
	// Let the keeper handle the extension's answer.
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, stack.Close())

	require.Zero(t, stack.Stats().LeaseLost)
	require.Equal(t, int64(1), stack.Stats().Processed)
	require.NotContains(t, logs.String(), "lease lost")
	require.Equal(t, int32(1), late.extends.Load(), "a settled claim is not extended again")
	mu.Lock()
	defer mu.Unlock()
	require.NotContains(t, kinds, middleware.KindLeaseLost)
}

// An extension that finds the record already completed raced with the
// completion: no lease is lost, nothing is logged or counted as lost.
func TestExtensionRacingCompletionIsNoLoss(t *testing.T) {
	late := newLateExtend(memstore.New(nil))
	raceCompletion(t, late, late, false, ok)
}

// The same race with the transactional inbox: the extension finds the record
// completed by the committed transaction; no lease is lost.
func TestExtensionRacingInboxCommitIsNoLoss(t *testing.T) {
	db, err := sqlstore.OpenSQLite(filepath.Join(t.TempDir(), "settle.db"))
	require.NoError(t, err)
	defer db.Close()
	inner, err := sqlstore.New(db, nil)
	require.NoError(t, err)
	require.NoError(t, inner.Migrate(context.Background()))
	late := newLateExtend(inner)
	inTx := func(m *message.Message) ([]*message.Message, error) {
		_, ok := sqlstore.TxFromContext(m.Context())
		require.True(t, ok, "the handler runs in the inbox transaction")
		return nil, nil
	}
	raceCompletion(t, &lateExtendTx{lateExtend: late, tx: inner}, late, true, inTx)
}

// The same race when the in-process attempts are exhausted and the message
// goes to a delayed-redelivery tier: the extension finds the claim released
// after the delayed copy was published. No lease is lost.
func TestExtensionRacingRedeliveryReleaseIsNoLoss(t *testing.T) {
	late := newLateExtend(memstore.New(nil))
	var logs syncBuffer
	tiers := newCapture()
	stack, err := middleware.New(middleware.Config{
		Store:      late,
		DLQ:        dlq.Config{Publisher: newCapture()},
		Lease:      time.Second, // extended about every 333 ms
		Retry:      retry.Policy{MaxAttempts: -1},
		Redelivery: &middleware.Redelivery{Delays: []time.Duration{time.Minute}, Publisher: tiers},
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	defer stack.Close()

	slow := func(*message.Message) ([]*message.Message, error) {
		time.Sleep(500 * time.Millisecond) // the keeper's extension starts meanwhile
		return nil, errors.New("downstream down")
	}
	err = within(t, 30*time.Second, "the delivery sent to a delay tier", func() error {
		_, err := stack.Middleware(slow)(msg("raced", "p"))
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 1, tiers.count(), "the delayed copy was published")
	select {
	case err := <-late.extended:
		require.ErrorIs(t, err, dedup.ErrLeaseLost, "the extension found the claim released")
	case <-time.After(5 * time.Second):
		t.Fatal("no extension ran while the handler did")
	}
	// Let the keeper handle the extension's answer.
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, stack.Close())

	require.Equal(t, int64(1), stack.Stats().Redelivered)
	require.Zero(t, stack.Stats().LeaseLost)
	require.NotContains(t, logs.String(), "lease lost")
	require.Equal(t, int32(1), late.extends.Load(), "a released claim is not extended again")
}
