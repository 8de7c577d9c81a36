package middleware

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idempo/idempo/dedup"
)

// errLeaseExpired is the cancellation cause of a handler whose lease could
// not be extended before it ran out.
var errLeaseExpired = errors.New("idempo: lease could not be extended before it ran out")

// keeperIdle is how long the keeper goroutine lingers with no lease to keep
// before it exits; it starts again with the next claim.
const keeperIdle = 200 * time.Millisecond

// lease is one claim held by this process.
type lease struct {
	key      dedup.Key
	token    dedup.Token
	deadline time.Time // monotonic: when the lease runs out unless extended
	next     time.Time // when to extend next
	cancel   context.CancelCauseFunc
	done     chan struct{} // closed when the claim is given up; nil until a twin waits
	busy     bool          // an extension is under way
	pending  bool          // gate held, claim not (yet) acquired
	lost     bool
	// settling is set once the handler succeeded (or the message is being
	// dead-lettered) and the stack records the outcome: an extension that
	// then finds the record no longer held raced with that record, and
	// nothing is lost.
	settling atomic.Bool
	handler  string
	topic    string
}

// keeper extends the leases of every claim this stack holds from one
// goroutine, which runs only while claims are held (plus keeperIdle).
// Holding a claim costs one map entry; no per-message goroutine or timer.
type keeper struct {
	s      *Stack
	mu     sync.Mutex
	leases map[dedup.Key]*lease
	alive  bool
	wake   chan struct{}
	wg     sync.WaitGroup
	closed bool
	// Tokens are a random per-stack prefix and a counter: unique across
	// processes and cheaper than a random read per message.
	tokenPrefix string
	tokenSeq    atomic.Uint64
}

// newToken returns a fresh owner token. Safe for concurrent use.
func (k *keeper) newToken() dedup.Token {
	var buf [48]byte
	b := append(buf[:0], k.tokenPrefix...)
	b = strconv.AppendUint(b, k.tokenSeq.Add(1), 36)
	return dedup.Token(b)
}

func newKeeper(s *Stack) *keeper {
	return &keeper{s: s, leases: make(map[dedup.Key]*lease), wake: make(chan struct{}, 1), tokenPrefix: string(dedup.NewToken())[:24] + "-"}
}

// enter makes l (filled in by the caller) the local gate holder of its
// key, so that only one delivery of a key per stack talks to the store at a
// time (concurrent twins in one process wait for each other instead of
// nacking). If another delivery holds the gate, l is not entered and enter
// returns that delivery's done channel.
func (k *keeper) enter(l *lease) <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if h, ok := k.leases[l.key]; ok {
		if h.done == nil {
			h.done = make(chan struct{}) // made only when a twin waits
		}
		return h.done
	}
	l.pending = true
	k.leases[l.key] = l
	return nil
}

// activate starts keeping the lease of a claim acquired at start (taken
// before the Claim call, so the deadline errs early, never late).
func (k *keeper) activate(l *lease, start time.Time, cancel context.CancelCauseFunc) {
	lease := k.s.cfg.Lease
	k.mu.Lock()
	l.cancel = cancel
	l.deadline = start.Add(lease)
	l.next = start.Add(lease / 3)
	l.pending = false
	if !k.alive && !k.closed {
		k.alive = true
		k.wg.Add(1)
		go k.loop()
	}
	k.mu.Unlock()
}

// unregister gives the claim up: no more extensions; waiting twins wake.
func (k *keeper) unregister(l *lease) {
	k.mu.Lock()
	if k.leases[l.key] == l {
		delete(k.leases, l.key)
	}
	if l.done != nil {
		close(l.done)
	}
	k.mu.Unlock()
}

func (k *keeper) close() {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
	k.wg.Wait()
}

func (k *keeper) loop() {
	defer k.wg.Done()
	timer := time.NewTimer(keeperIdle)
	defer timer.Stop()
	idleSince := time.Now()
	for {
		now := time.Now()
		k.mu.Lock()
		if k.closed || (len(k.leases) == 0 && now.Sub(idleSince) >= keeperIdle) {
			k.alive = false
			k.mu.Unlock()
			return
		}
		wakeAt := now.Add(keeperIdle)
		if len(k.leases) > 0 {
			idleSince = now
		}
		for _, l := range k.leases {
			if l.lost || l.pending {
				continue
			}
			if !now.Before(l.deadline) {
				l.lost = true
				l.cancel(errLeaseExpired)
				continue
			}
			if !l.busy && !now.Before(l.next) {
				l.busy = true
				k.wg.Add(1)
				go k.extend(l)
			}
			if !l.busy && l.next.Before(wakeAt) {
				wakeAt = l.next
			}
			if l.deadline.Before(wakeAt) {
				wakeAt = l.deadline
			}
		}
		k.mu.Unlock()
		timer.Reset(time.Until(wakeAt))
		select {
		case <-timer.C:
		case <-k.wake:
			if !timer.Stop() {
				<-timer.C
			}
		}
	}
}

// extend extends one lease. It runs on its own goroutine, one per extension
// (every Lease/3 per long-running claim), so a slow store delays no other lease.
func (k *keeper) extend(l *lease) {
	defer k.wg.Done()
	s := k.s
	leaseDur := s.cfg.Lease
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), l.deadline)
	err := s.cfg.Store.Extend(ctx, l.key, l.token, leaseDur)
	cancel()
	s.observeStore(context.Background(), l.handler, l.topic, OpExtend, start, err)

	k.mu.Lock()
	l.busy = false
	raced := false
	switch {
	case err == nil:
		l.deadline = start.Add(leaseDur)
		l.next = start.Add(leaseDur / 3)
		s.stats.leaseExtensions.Add(1)
	case errors.Is(err, dedup.ErrLeaseLost) && l.settling.Load():
		// The outcome was recorded while the extension ran: not a loss,
		// and nothing left to extend.
		raced = true
		l.next = l.deadline
	case errors.Is(err, dedup.ErrLeaseLost):
		l.lost = true
		l.cancel(err)
	default:
		// Try again soon; the loop cancels the handler at the deadline.
		l.next = time.Now().Add(leaseDur / 10)
	}
	lost := l.lost
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
	switch {
	case raced:
	case err == nil:
		s.cfg.Observer.Observe(context.Background(), Event{Kind: KindLeaseExtended, Handler: l.handler, Topic: l.topic})
	case lost:
		s.cfg.Logger.Warn("idempo: lease lost while the handler ran; its context is cancelled",
			"scope", l.key.Scope, "event_id", l.key.ID, "error", err)
	default:
		s.cfg.Logger.Warn("idempo: lease extension failed; retrying", "scope", l.key.Scope, "event_id", l.key.ID, "error", err)
	}
}
