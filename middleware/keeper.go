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

// keeperIdle is how long the keeper goroutine lingers with no lease to keep
// before it exits; it starts again with the next claim.
const keeperIdle = 200 * time.Millisecond

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

// touch tells the broker the message of l is still being handled, after
// its lease was extended up to until, so the broker's redelivery clock
// (JetStream's AckWait, a Redis pending entry's idle time) restarts with
// idempo's. A failure is logged: the next extension tries again, and the
// broker redelivering the message early costs a nack, not a double effect.
func (k *keeper) touch(l *lease, until time.Time) {
	k.mu.Lock()
	live := l.touch != nil && (l.state == leaseHeld || l.state == leaseSettling)
	k.mu.Unlock()
	if !live {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(until.Sub(k.clk.Now()), time.Millisecond))
	defer cancel()
	if err := l.touch(ctx); err != nil {
		k.s.cfg.Logger.Warn("idempo: telling the broker the message is still being handled failed",
			"scope", l.key.Scope, "event_id", l.key.ID, "error", err)
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
	s.observeStore(context.Background(), l.handler, l.topic, opExtend, start, err)

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
		k.touch(l, start.Add(leaseDur))
	case lost:
		s.cfg.Logger.Warn("idempo: lease lost while the handler ran; its context is cancelled",
			"scope", l.key.Scope, "event_id", l.key.ID, "error", err)
	default:
		s.cfg.Logger.Warn("idempo: lease extension failed; retrying", "scope", l.key.Scope, "event_id", l.key.ID, "error", err)
	}
}
