package middleware

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
)

// manualClock is a clock that moves only when told to. Its timers fire on
// Advance (or at once when reset to a moment already past).
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	clk    *manualClock
	c      chan time.Time
	at     time.Time
	active bool
}

func newManualClock() *manualClock { return &manualClock{now: time.Unix(1_700_000_000, 0)} }

func (m *manualClock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

func (m *manualClock) NewTimer(d time.Duration) clockTimer {
	t := &manualTimer{clk: m, c: make(chan time.Time, 1)}
	m.mu.Lock()
	m.timers = append(m.timers, t)
	m.mu.Unlock()
	t.Reset(d)
	return t
}

// Advance moves the clock by d and fires the timers due by then.
func (m *manualClock) Advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = m.now.Add(d)
	m.fireLocked()
}

func (m *manualClock) fireLocked() {
	for _, t := range m.timers {
		if t.active && !t.at.After(m.now) {
			t.active = false
			select {
			case t.c <- m.now:
			default:
			}
		}
	}
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

func (t *manualTimer) Reset(d time.Duration) {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	select { // discard a value not received, as time.Timer does
	case <-t.c:
	default:
	}
	t.at, t.active = t.clk.now.Add(d), true
	t.clk.fireLocked()
}

func (t *manualTimer) Stop() {
	t.clk.mu.Lock()
	t.active = false
	t.clk.mu.Unlock()
}

// extendRecorder is a store that reports each Extend call and can fail them.
type extendRecorder struct {
	dedup.Store
	extended chan dedup.Key
	fail     atomic.Bool
}

var errExtendDown = errors.New("store unreachable")

func (r *extendRecorder) Extend(ctx context.Context, k dedup.Key, t dedup.Token, l time.Duration) error {
	r.extended <- k
	if r.fail.Load() {
		return errExtendDown
	}
	return r.Store.Extend(ctx, k, t, l)
}

type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

const testLease = 3 * time.Second

type keeperBundle struct {
	s     *Stack
	k     *keeper
	clk   *manualClock
	store *extendRecorder
}

func newKeeperBundle(t *testing.T) *keeperBundle {
	t.Helper()
	st := &extendRecorder{Store: memstore.New(nil), extended: make(chan dedup.Key, 64)}
	s, err := New(Config{Store: st, DLQ: dlq.Config{Publisher: nopPublisher{}}, Lease: testLease, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	clk := newManualClock()
	s.keeper.clk = clk // before any claim: nothing runs yet
	t.Cleanup(func() { _ = s.Close() })
	return &keeperBundle{s: s, k: s.keeper, clk: clk, store: st}
}

// hold claims id in the store and makes the keeper keep it as a claim sent
// at start; the returned context is the handler's.
func (b *keeperBundle) hold(t *testing.T, id string, start time.Time) (*lease, context.Context) {
	t.Helper()
	k := dedup.Key{Scope: "keeper", ID: id}
	l := &lease{key: k, token: b.k.newToken()}
	require.Nil(t, b.k.enter(l))
	res, err := b.store.Claim(context.Background(), k, dedup.ClaimRequest{Token: l.token, Lease: time.Hour, Retention: time.Hour})
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	b.k.activate(l, start, cancel)
	return l, ctx
}

// asleep waits until the keeper's loop runs and sleeps until a known moment.
func (b *keeperBundle) asleep(t *testing.T) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b.k.mu.Lock()
		at, alive := b.k.wakeAt, b.k.alive
		b.k.mu.Unlock()
		if alive && !at.IsZero() {
			return at
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the keeper's loop did not start within 10s")
	return time.Time{}
}

func (b *keeperBundle) expectExtend(t *testing.T, id string, why string) {
	t.Helper()
	select {
	case k := <-b.store.extended:
		require.Equal(t, id, k.ID, why)
	case <-time.After(10 * time.Second):
		t.Fatalf("no extension of %q within 10s: %s", id, why)
	}
}

func expectCancelled(t *testing.T, ctx context.Context, why string) {
	t.Helper()
	select {
	case <-ctx.Done():
		require.ErrorIs(t, context.Cause(ctx), errLeaseExpired, why)
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler was not cancelled within 10s: %s", why)
	}
}

func requireNotCancelled(t *testing.T, ctx context.Context, why string) {
	t.Helper()
	// The loop runs on real time between manual steps: give it a moment to
	// act wrongly.
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, ctx.Err(), why)
}

// A cold keeper (no loop running) serves a claim whose first extension is
// already due at once.
func TestKeeperColdServesOverdueClaim(t *testing.T) {
	b := newKeeperBundle(t)
	b.hold(t, "a", b.clk.Now().Add(-testLease/2))
	b.expectExtend(t, "a", "the first extension was due when the claim was activated")
}

// A keeper whose loop sleeps until a later moment is woken by a claim due
// earlier (a claim whose Claim call took long to answer), without any time
// passing on its clock.
func TestKeeperAwakeReschedulesForEarlierClaim(t *testing.T) {
	b := newKeeperBundle(t)
	now := b.clk.Now()
	b.hold(t, "late", now) // first extension due at now+Lease/3
	require.True(t, b.asleep(t).After(now))
	b.hold(t, "early", now.Add(-testLease/2)) // sent Lease/2 ago: first extension overdue
	b.expectExtend(t, "early", "an awake keeper is woken for a claim due before its next look")
	select {
	case k := <-b.store.extended:
		t.Fatalf("%q extended before its time", k.ID)
	case <-time.After(50 * time.Millisecond):
	}
	b.clk.Advance(testLease / 3)
	// Both fall due now ("early" was extended at the start of this clock).
	seen := map[string]bool{}
	for range 2 {
		select {
		case k := <-b.store.extended:
			seen[k.ID] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v extended within 10s once their next extensions fell due", seen)
		}
	}
	require.True(t, seen["late"], "extended when its first extension falls due")
}

// A lease whose extensions fail is cut off Lease/4 before it runs out: the
// handler's context is cancelled then, not before, whether the cutoff comes
// while the keeper sleeps or had already passed when the claim was activated.
func TestKeeperCancelsAtCutoff(t *testing.T) {
	b := newKeeperBundle(t)
	b.store.fail.Store(true)
	now := b.clk.Now()
	b.hold(t, "other", now)
	b.asleep(t)

	_, ctx := b.hold(t, "failing", now.Add(-testLease/2)) // cutoff at now+Lease/4
	b.expectExtend(t, "failing", "the overdue extension is tried (and fails)")
	requireNotCancelled(t, ctx, "the cutoff has not come")
	b.clk.Advance(testLease/4 - time.Millisecond)
	requireNotCancelled(t, ctx, "1ms before the cutoff")
	b.clk.Advance(time.Millisecond)
	expectCancelled(t, ctx, "at the cutoff, Lease/4 before the lease runs out")

	// Activated past its cutoff (the Claim call took most of the lease):
	// cancelled at once, the keeper being awake.
	_, gone := b.hold(t, "gone", b.clk.Now().Add(-testLease*9/10))
	expectCancelled(t, gone, "activated past its cutoff")
}

// Closing the stack cancels the handlers of the claims still held (their
// leases would run out under them), and a claim activated after Close is
// cancelled at once.
func TestKeeperCloseCancelsHeldClaims(t *testing.T) {
	b := newKeeperBundle(t)
	_, ctx := b.hold(t, "held", b.clk.Now())
	require.NoError(t, b.s.Close())
	select {
	case <-ctx.Done():
		require.ErrorIs(t, context.Cause(ctx), errStackClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("a held claim's handler was not cancelled by Close")
	}
	_, after := b.hold(t, "after", b.clk.Now())
	require.ErrorIs(t, context.Cause(after), errStackClosed, "activated after Close")
}
