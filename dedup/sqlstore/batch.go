package sqlstore

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
)

// maxBatch bounds the rows of one multi-row statement. The statements are
// prepared once per row count, and only for powers of two (see padded), so a
// store prepares at most seven of each kind per connection (MySQL and
// MariaDB bound the prepared statements of the whole server).
const maxBatch = 64

// padded returns the row count of the statement that sends n rows: the
// next power of two. The rows beyond n repeat the last one, which every
// statement here takes as a no-op (a key already inserted by the same
// statement is skipped, a repeated WHEN never matches first, a repeated IN
// element changes nothing), so the affected-row counts still count the n.
func padded(n int) int {
	return 1 << bits.Len(uint(n-1))
}

// queued is a call that can wait in a batcher's queue.
type queued interface {
	comparable
	wake() chan bool
	setWake(chan bool)
}

// batcher gathers the calls of concurrent goroutines into batches sent as
// one statement. It uses no goroutine of its own and no timer: the first
// caller that finds no batch under way leads, sends what is queued (its own
// call first) and, when more calls queued up meanwhile, hands the lead to
// the first of them. A caller alone is sent at once, so with one call in
// flight nothing waits; under load each batch holds the calls that arrived
// while the previous one was on the wire.
type batcher[T queued] struct {
	send func(batch []T)

	mu      sync.Mutex
	leading bool
	queue   []T

	// Counters for tests and benchmarks: batches sent and calls in them.
	batches, calls int64
}

// run queues c and returns once a batch answered it.
func (b *batcher[T]) run(c T) {
	b.mu.Lock()
	b.queue = append(b.queue, c)
	lead := !b.leading
	if !lead {
		// Only a call that waits needs a channel to be woken by.
		c.setWake(make(chan bool, 1))
	}
	b.leading = true
	b.mu.Unlock()

	if !lead {
		lead = <-c.wake()
	}
	if lead {
		b.lead()
	}
}

// lead sends up to maxBatch queued calls (the leader's own is the first),
// answers them, then hands the lead on to the first call still queued.
func (b *batcher[T]) lead() {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := make([]T, n)
	copy(batch, b.queue)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	b.batches++
	b.calls += int64(n)
	b.mu.Unlock()

	defer func() {
		// Even if send panicked: every queued call is answered and the
		// lead passes on, so no caller waits forever.
		b.mu.Lock()
		var next T
		var zero T
		if len(b.queue) > 0 {
			next = b.queue[0]
		} else {
			b.leading = false
		}
		b.mu.Unlock()
		for _, c := range batch[1:] {
			c.wake() <- false
		}
		if next != zero {
			next.wake() <- true
		}
	}()
	b.send(batch)
}

// stats returns the batches sent and the calls they held.
func (b *batcher[T]) stats() (batches, calls int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.batches, b.calls
}

// batchContext is the context a batch's statement runs in: one caller's
// cancellation must not fail the others, so it is detached from every
// caller (keeping the first one's values) and ends when all of their
// contexts have ended. The returned stop releases it.
func batchContext(ctxs []context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctxs[0]))
	var left atomic.Int32
	left.Store(int32(len(ctxs)))
	stops := make([]func() bool, len(ctxs))
	for i, c := range ctxs {
		stops[i] = context.AfterFunc(c, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}
