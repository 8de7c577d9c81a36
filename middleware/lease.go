package middleware

import (
	"context"
	"errors"
	"time"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/internal/progress"
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
	// touch tells the broker the message is still being handled (NATS
	// JetStream's in-progress ack); called after each extension. May be nil.
	touch progress.Touch
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
