package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/idempo/idempo/internal/wire"
)

// drainGrace is how long a partition that is revoked or closing waits for
// the handlers of messages already handed out to ack or nack once their
// contexts are cancelled; an ack within it moves the committed watermark.
// The claim returns within it, well under sarama's rebalance timeout.
const drainGrace = 2 * time.Second

// entry is one record read from a partition and not yet settled.
type entry struct {
	rec   *sarama.ConsumerMessage
	q     *keyQueue // its key's queue (KeyOrder)
	next  *entry    // the next record of its key
	acked bool
}

// keyQueue holds the unsettled records of one key in offset order; the head
// is handed out, the others wait for it.
type keyQueue struct {
	key        string
	head, tail *entry
}

// partitionRun hands out the records of one claimed partition, up to max at
// once, and marks the watermark: the offset of its oldest unsettled record.
// One goroutine (run) owns the state; a goroutine per handed-out record
// reports its ack on acks.
type partitionRun struct {
	h     *groupHandler
	sess  sarama.ConsumerGroupSession
	claim sarama.ConsumerGroupClaim

	ctx     context.Context // cancelled when the claim ends
	cancel  context.CancelFunc
	abandon chan struct{} // closed drainGrace after ctx
	acks    chan *entry   // capacity max: a send never blocks
	wg      sync.WaitGroup

	pending  []*entry // unsettled records in offset order, from pending[head]
	head     int
	inFlight int
	keys     map[string]*keyQueue
	noKey    *keyQueue // records without a key
	marked   int64     // last offset marked, -1 for none
	draining bool      // the claim ended: hand out nothing more
	next     int64     // the offset after the last record read
}

func newPartitionRun(h *groupHandler, sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) *partitionRun {
	ctx, cancel := context.WithCancel(h.ctx)
	return &partitionRun{
		h: h, sess: sess, claim: claim,
		ctx: ctx, cancel: cancel,
		abandon: make(chan struct{}),
		acks:    make(chan *entry, h.max),
		keys:    make(map[string]*keyQueue),
		marked:  -1,
	}
}

// run reads the partition until the claim or the subscription ends, then
// cancels the handed-out messages, waits up to drainGrace for them to settle
// and marks the final watermark.
func (p *partitionRun) run() {
	msgs := p.claim.Messages()
	done := p.sess.Context().Done()
loop:
	for {
		var in <-chan *sarama.ConsumerMessage
		if p.inFlight < p.h.max {
			in = msgs // at max, read nothing more of the partition
		}
		select {
		case rec, ok := <-in:
			if !ok {
				break loop
			}
			p.add(rec)
		case e := <-p.acks:
			p.settle(e)
		case <-done:
			break loop
		case <-p.ctx.Done():
			break loop
		}
	}
	p.draining = true
	p.cancel()
	timer := time.AfterFunc(drainGrace, func() { close(p.abandon) })
	defer timer.Stop()
	finished := make(chan struct{})
	go func() { p.wg.Wait(); close(finished) }()
	for {
		select {
		case e := <-p.acks:
			p.settle(e)
		case <-finished:
			for len(p.acks) > 0 {
				p.settle(<-p.acks)
			}
			return
		}
	}
}

// add takes a record read from the partition and hands it out unless an
// earlier record of its key is unsettled.
func (p *partitionRun) add(rec *sarama.ConsumerMessage) {
	e := &entry{rec: rec}
	p.next = rec.Offset + 1
	p.pending = append(p.pending, e)
	p.inFlight++
	if !p.h.keyed {
		p.deliver(e)
		return
	}
	q := p.noKey
	if rec.Key != nil {
		q = p.keys[string(rec.Key)]
	}
	if q != nil {
		e.q = q
		q.tail.next, q.tail = e, e
		return
	}
	q = &keyQueue{head: e, tail: e}
	e.q = q
	if rec.Key == nil {
		p.noKey = q
	} else {
		q.key = string(rec.Key)
		p.keys[q.key] = q
	}
	p.deliver(e)
}

// settle records e's ack: the watermark moves past every settled record at
// the front, and the next record of e's key is handed out.
func (p *partitionRun) settle(e *entry) {
	e.acked = true
	p.inFlight--
	for p.head < len(p.pending) && p.pending[p.head].acked {
		p.pending[p.head] = nil
		p.head++
	}
	if p.head == len(p.pending) {
		p.pending, p.head = p.pending[:0], 0
		p.mark(p.next)
	} else {
		if p.head > len(p.pending)/2 && p.head > 64 {
			n := copy(p.pending, p.pending[p.head:])
			clear(p.pending[n:])
			p.pending, p.head = p.pending[:n], 0
		}
		p.mark(p.pending[p.head].rec.Offset)
	}
	if q := e.q; q != nil && !p.draining {
		q.head = e.next
		switch {
		case q.head != nil:
			p.deliver(q.head)
		case q == p.noKey:
			p.noKey = nil
		default:
			delete(p.keys, q.key)
		}
	}
}

// mark marks offset (the next to consume) if it moved forward.
func (p *partitionRun) mark(offset int64) {
	if offset > p.marked {
		p.marked = offset
		p.sess.MarkOffset(p.claim.Topic(), p.claim.Partition(), offset, "")
	}
}

func (p *partitionRun) deliver(e *entry) {
	p.wg.Add(1)
	go p.handOut(e)
}

// handOut sends e's message to the output until it is acked, waiting
// NackDelay after each nack, and reports the ack. When the claim ends it
// stops; a message already handed out gets drainGrace to settle.
func (p *partitionRun) handOut(e *entry) {
	defer p.wg.Done()
	msg, _ := wire.KafkaMarshaler{}.Unmarshal(e.rec) // never fails
	for {
		if p.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithCancel(p.ctx)
		msg.SetContext(ctx)
		select {
		case p.h.out <- msg:
		case <-p.ctx.Done():
			cancel()
			return
		}
		select {
		case <-msg.Acked():
			cancel()
			p.acks <- e
			return
		case <-msg.Nacked():
			cancel()
		case <-p.ctx.Done():
			select {
			case <-msg.Acked():
				p.acks <- e
			case <-msg.Nacked():
			case <-p.abandon:
			}
			cancel()
			return
		}
		if p.h.nackDelay > 0 {
			t := time.NewTimer(p.h.nackDelay)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				return
			}
		}
		msg = msg.Copy()
	}
}
