package redisstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// coalescer sends the scripts of concurrent calls to Redis together, in
// one pipeline, instead of one round trip each. It uses no goroutine of its
// own: the first caller that finds no pipeline under way leads, sends what
// is queued (its own call included) and, when more calls queued up
// meanwhile, hands the lead to the first of them. A caller alone is sent at
// once, as without coalescing.
type coalescer struct {
	client redis.UniversalClient
	trips  *sharingCounters

	mu      sync.Mutex
	leading bool
	queue   []*scriptCall
}

// scriptCall is one queued script call.
type scriptCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	// ready gets true when the call should lead the next pipeline, false
	// when its cmd is answered.
	ready chan bool
}

var callPool = sync.Pool{New: func() any { return &scriptCall{ready: make(chan bool, 1)} }}

// run returns the reply of script on keys and args, sent with the calls
// of other goroutines that are queued at the same moment. A call waits for
// its pipeline even when ctx ends meanwhile (the pipeline is bounded by the
// latest deadline among its calls and by the client's timeouts), so that
// every queued call is answered and the lead always passes on.
func (c *coalescer) run(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	call := callPool.Get().(*scriptCall)
	call.ctx, call.script, call.keys, call.args = ctx, script, keys, args

	c.mu.Lock()
	c.queue = append(c.queue, call)
	lead := !c.leading
	c.leading = true
	c.mu.Unlock()

	if !lead {
		lead = <-call.ready
	}
	if lead {
		c.lead(call) //nolint:contextcheck // the pipeline serves every queued call; each brings its own context
	}
	res, err := call.cmd.Result()
	*call = scriptCall{ready: call.ready}
	callPool.Put(call)
	return res, err
}

// lead sends the queued calls (self's among them) and answers them, then
// hands the lead on to the first call queued meanwhile.
func (c *coalescer) lead(self *scriptCall) {
	c.mu.Lock()
	batch := c.queue
	c.queue = nil
	c.mu.Unlock()

	c.send(batch)

	c.mu.Lock()
	var next *scriptCall
	if len(c.queue) > 0 {
		next = c.queue[0]
	} else {
		c.leading = false
	}
	c.mu.Unlock()

	for _, call := range batch {
		if call != self {
			call.ready <- false
		}
	}
	if next != nil {
		next.ready <- true
	}
}

// send sends the batch: one call as it is, more in one pipeline. A call the
// server answers with NOSCRIPT (its script cache was flushed) is sent again
// on its own, which loads the script.
func (c *coalescer) send(batch []*scriptCall) {
	c.trips.add(len(batch))
	if len(batch) == 1 {
		call := batch[0]
		call.cmd = call.script.Run(call.ctx, c.client, call.keys, call.args...)
		return
	}
	// One caller's cancellation must not fail the others: the pipeline runs
	// on a detached context (the first call's values) until the latest
	// deadline among the calls, or within the client's timeouts if one of
	// them has none.
	ctx := context.WithoutCancel(batch[0].ctx)
	var latest time.Time
	for _, call := range batch {
		dl, ok := call.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	pipe := c.client.Pipeline()
	for _, call := range batch {
		call.cmd = call.script.EvalSha(ctx, pipe, call.keys, call.args...)
	}
	_, _ = pipe.Exec(ctx) // each cmd carries its own error
	for _, call := range batch {
		if err := call.cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			call.cmd = call.script.Run(ctx, c.client, call.keys, call.args...)
		}
	}
}
