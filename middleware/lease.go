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
// not be extended in time: its context is cancelled a guard (Lease/4)
// before the lease runs out, so that a handler honouring its context has
// stopped before another worker can claim the event.
var errLeaseExpired = errors.New("idempo: lease could not be extended before it ran out")

// errStackClosed is the cancellation cause of handlers still running (or
// starting) when the stack is closed: without the keeper their leases would
// run out under them.
var errStackClosed = errors.New("idempo: stack closed while the handler ran")

// MinLease is the shortest [Config.Lease] New accepts. The keeper extends a
// lease every Lease/3 and cancels the handler's context Lease/4 before the
// lease runs out if no extension got through, so an extension has
// Lease·5/12 (417 ms at the minimum) to be sent, answered and seen, and a
// cancelled handler Lease/4 (250 ms) to return. Below one second, a store
// round trip plus a scheduling pause on a loaded machine (a busy database,
// a garbage-collection cycle, two cores shared with other work) can outlast
// those margins, and a twin could then claim the event while the first
// handler still runs.
const MinLease = time.Second

// keeperIdle is how long the keeper goroutine lingers with no lease to keep
// before it exits; it starts again with the next claim.
const keeperIdle = 200 * time.Millisecond

// leaseState is where a lease is in its life. It changes only under the
// keeper's lock, by the keeper's methods:
//
//	gated ──activate──▶ held ──settle──▶ settling ──unregister──▶ (gone)
//	  │                  │  ▲──unsettle──┘  │
//	  │                  └──────┬───────────┘
//	  │              cut off, lost, closed
//	  │                         ▼
//	  └──────unregister──── stopped ──unregister──▶ (gone)
type leaseState uint8

const (
	// leaseGated: the delivery holds its key's local gate; the claim is not
	// (yet) acquired. The keeper ignores it.
	leaseGated leaseState = iota
	// leaseHeld: the claim is acquired and the handler may run; the keeper
	// extends the lease and cuts it off if it cannot.
	leaseHeld
	// leaseSettling: the stack records the outcome (completion, dead
	// letter, release). Still extended; an extension that finds the record
	// no longer held raced with that record, and nothing is lost.
	leaseSettling
	// leaseStopped: no longer kept (lost, cut off, stack closed, or settled
	// while an extension ran); the handler's context is cancelled unless the
	// record was settled.
	leaseStopped
)

// lease is one claim held by this process. Every field below the token is
// guarded by the keeper's lock.
type lease struct {
	key       dedup.Key
	token     dedup.Token
	state     leaseState
	extending bool      // an extension is under way
	deadline  time.Time // monotonic: when the lease runs out unless extended
	next      time.Time // when to extend next
	cancel    context.CancelCauseFunc
	done      chan struct{} // closed when the claim is given up; nil until a twin waits
	handler   string
	topic     string
}

// keeper extends the leases of every claim this stack holds from one
// goroutine, which runs only while claims are held (plus keeperIdle).
// Holding a claim costs one map entry; no per-message goroutine or timer.
type keeper struct {
	s     *Stack
	clk   clock
	lease time.Duration // Config.Lease
	guard time.Duration // the handler is cancelled this long before its lease runs out
	mu    sync.Mutex
	// leases holds the local gates and the claims held, by key.
	leases map[dedup.Key]*lease
	alive  bool      // the loop goroutine runs
	wakeAt time.Time // when the running loop looks at the leases next
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

func newKeeper(s *Stack, clk clock) *keeper {
	return &keeper{
		s: s, clk: clk, lease: s.cfg.Lease, guard: s.cfg.Lease / 4,
		leases: make(map[dedup.Key]*lease), wake: make(chan struct{}, 1),
		tokenPrefix: string(dedup.NewToken())[:24] + "-",
	}
}

// signal wakes the loop if it sleeps. Safe for concurrent use.
func (k *keeper) signal() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
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
	l.state = leaseGated
	k.leases[l.key] = l
	return nil
}

// activate starts keeping the lease of a claim acquired at start (read from
// the keeper's clock before the Claim call was sent, so the deadline errs
// early, never late). A loop that sleeps past the new lease's first
// extension (a claim that took long to answer, or a loop waiting on a later
// lease) is woken, so every lease is served on time whether the loop was
// running or not. After Close, the handler is cancelled at once.
func (k *keeper) activate(l *lease, start time.Time, cancel context.CancelCauseFunc) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l.cancel = cancel
	l.deadline = start.Add(k.lease)
	l.next = start.Add(k.lease / 3)
	l.state = leaseHeld
	switch {
	case k.closed:
		l.state = leaseStopped
		cancel(errStackClosed)
	case !k.alive:
		k.alive = true
		k.wg.Add(1)
		go k.loop()
	case l.next.Before(k.wakeAt):
		k.signal()
	}
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

// close stops the loop and cancels the handlers of the claims still held:
// their leases are no longer extended, so they must stop before they run out.
// settle marks a held lease as settling: the stack now records the outcome,
// and an extension that finds the record no longer held raced with that
// record. Safe for concurrent use.
func (k *keeper) settle(l *lease) {
	k.mu.Lock()
	if l.state == leaseHeld {
		l.state = leaseSettling
	}
	k.mu.Unlock()
}

// unsettle returns a settling lease to held: the record was not settled
// after all (an inbox transaction that did not commit).
func (k *keeper) unsettle(l *lease) {
	k.mu.Lock()
	if l.state == leaseSettling {
		l.state = leaseHeld
	}
	k.mu.Unlock()
}

func (k *keeper) close() {
	k.mu.Lock()
	k.closed = true
	for _, l := range k.leases {
		if l.state == leaseHeld || l.state == leaseSettling {
			l.state = leaseStopped
			l.cancel(errStackClosed)
		}
	}
	k.mu.Unlock()
	k.signal()
	k.wg.Wait()
}

// loop extends every held lease about every Lease/3 and cancels the handler
// of a lease that could not be extended by its cutoff (Lease/4 before it
// runs out). It sleeps until the earliest of those moments; activate wakes
// it for a lease due earlier.
func (k *keeper) loop() {
	defer k.wg.Done()
	timer := k.clk.NewTimer(keeperIdle)
	defer timer.Stop()
	idleSince := k.clk.Now()
	for {
		now := k.clk.Now()
		k.mu.Lock()
		if k.closed || (len(k.leases) == 0 && now.Sub(idleSince) >= keeperIdle) {
			k.alive = false
			k.wakeAt = time.Time{}
			k.mu.Unlock()
			return
		}
		wakeAt := now.Add(keeperIdle)
		if len(k.leases) > 0 {
			idleSince = now
		}
		for _, l := range k.leases {
			if l.state != leaseHeld && l.state != leaseSettling {
				continue
			}
			cutoff := l.deadline.Add(-k.guard)
			if !now.Before(cutoff) {
				l.state = leaseStopped
				l.cancel(errLeaseExpired)
				continue
			}
			if !l.extending && !now.Before(l.next) {
				l.extending = true
				k.wg.Add(1)
				go k.extend(l)
			}
			if !l.extending && l.next.Before(wakeAt) {
				wakeAt = l.next
			}
			if cutoff.Before(wakeAt) {
				wakeAt = cutoff
			}
		}
		k.wakeAt = wakeAt
		k.mu.Unlock()
		timer.Reset(wakeAt.Sub(now))
		select {
		case <-timer.C():
		case <-k.wake:
		}
	}
}

// extend extends one lease. It runs on its own goroutine, one per extension
// (every Lease/3 per long-running claim), so a slow store delays no other lease.
func (k *keeper) extend(l *lease) {
	defer k.wg.Done()
	s := k.s
	leaseDur := k.lease
	start := k.clk.Now()
	// The extension is worth waiting for until the lease runs out.
	ctx, cancel := context.WithTimeout(context.Background(), l.deadline.Sub(start))
	err := s.cfg.Store.Extend(ctx, l.key, l.token, leaseDur)
	cancel()
	s.observeStore(context.Background(), l.handler, l.topic, OpExtend, start, err)

	k.mu.Lock()
	l.extending = false
	quiet, lost := false, false
	switch {
	case l.state == leaseStopped:
		// Cut off, closed or settled while the extension ran: the handler
		// is already cancelled or done; nothing to report.
		quiet = true
	case err == nil:
		l.deadline = start.Add(leaseDur)
		l.next = start.Add(leaseDur / 3)
	case errors.Is(err, dedup.ErrLeaseLost) && l.state == leaseSettling:
		// The outcome was recorded while the extension ran: not a loss,
		// and nothing left to extend.
		quiet = true
		l.state = leaseStopped
	case errors.Is(err, dedup.ErrLeaseLost):
		lost = true
		l.state = leaseStopped
		l.cancel(err)
	default:
		// Try again soon; the loop cancels the handler at its cutoff.
		l.next = k.clk.Now().Add(leaseDur / 10)
	}
	k.mu.Unlock()
	k.signal()
	switch {
	case quiet:
	case err == nil:
		s.emit(context.Background(), Event{Kind: KindLeaseExtended, Handler: l.handler, Topic: l.topic})
	case lost:
		s.cfg.Logger.Warn("idempo: lease lost while the handler ran; its context is cancelled",
			"scope", l.key.Scope, "event_id", l.key.ID, "error", err)
	default:
		s.cfg.Logger.Warn("idempo: lease extension failed; retrying", "scope", l.key.Scope, "event_id", l.key.ID, "error", err)
	}
}
