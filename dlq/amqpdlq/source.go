package amqpdlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/internal/wire"
)

// StreamArguments are the queue arguments of a DLQ queue: a durable stream.
// Everything that declares a DLQ queue must pass the same arguments, or
// RabbitMQ refuses the second declaration (PRECONDITION_FAILED).
func StreamArguments() map[string]any { return map[string]any{"x-queue-type": "stream"} }

// StreamOffsetHeader is the delivery header in which RabbitMQ gives a stream
// message's offset.
const StreamOffsetHeader = "x-stream-offset"

// NewDLQPublisher returns a publisher for dead-letter copies (give it to
// middleware.Config.DLQ.Publisher): the idempo RabbitMQ publisher of
// package broker/amqp with cfg, except that every queue it declares is a
// durable stream queue, which [Source] can read without consuming. Its
// QueueArguments are replaced by [StreamArguments] and NonDurable is
// cleared (streams are always durable). Use it for DLQ topics only: the
// consumers' own queues stay classic or quorum queues.
func NewDLQPublisher(cfg amqp.Config, logger *slog.Logger) (*amqp.Publisher, error) {
	cfg.QueueArguments = StreamArguments()
	cfg.NonDurable = false
	return amqp.NewPublisher(cfg, logger)
}

// ErrNoQueue is matched by the error [Source.Read] returns for a queue that
// does not exist.
var ErrNoQueue = errors.New("amqpdlq: no such queue")

// ErrNotStream is matched by the error [Source.Read] returns for a queue
// that exists but is not a stream (a classic queue cannot be read without
// taking its messages).
var ErrNotStream = errors.New("amqpdlq: queue is not a stream queue")

// Defaults of [Options].
const (
	DefaultPrefetch  = 256
	DefaultIdle      = time.Second
	DefaultFirstWait = 3 * time.Second
	DefaultMaxWait   = 30 * time.Second
)

// Options tunes a [Source]. A nil *Options means all defaults.
type Options struct {
	// Prefetch is the consumer's QoS prefetch (streams require one).
	// Defaults to [DefaultPrefetch].
	Prefetch int
	// Idle is how long Read waits for one more delivery once it has read as
	// many messages as the queue reported when the read began; silence that
	// long ends the read. Defaults to [DefaultIdle].
	Idle time.Duration
	// FirstWait is how long Read waits for the first delivery when the
	// queue reported no messages (RabbitMQ refreshes a stream's message
	// count every few seconds, so a fresh one may report 0). An empty
	// stream costs this long. Defaults to [DefaultFirstWait].
	FirstWait time.Duration
	// MaxWait bounds the wait for a delivery the reported count still
	// promises; past it the read ends with what it has. Defaults to
	// [DefaultMaxWait].
	MaxWait time.Duration
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Prefetch <= 0 {
		r.Prefetch = DefaultPrefetch
	}
	if r.Idle <= 0 {
		r.Idle = DefaultIdle
	}
	if r.FirstWait <= 0 {
		r.FirstWait = DefaultFirstWait
	}
	if r.MaxWait <= 0 {
		r.MaxWait = DefaultMaxWait
	}
	return r
}

// Source reads RabbitMQ stream queues for [dlqops.Ops]. Reading a stream
// consumes nothing: each Read attaches a new consumer at the first offset,
// acks what it reads (which only grants credit on a stream) and cancels the
// consumer at the end. It is safe for concurrent use; each Read has its own
// channel on a shared connection, which is re-dialled when lost.
type Source struct {
	url  string
	opts Options

	mu     sync.Mutex
	conn   *amqp091.Connection
	closed bool
}

var _ dlqops.Source = (*Source)(nil)

// NewSource connects to url (amqp://user:pass@host:port/vhost) and returns
// a Source. Close it when done.
func NewSource(url string, opts *Options) (*Source, error) {
	if _, err := amqp.ParseURL(url); err != nil {
		return nil, err
	}
	s := &Source{url: url, opts: opts.withDefaults()}
	if _, err := s.connection(); err != nil {
		return nil, err
	}
	return s, nil
}

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("amqpdlq: source closed")

func (s *Source) connection() (*amqp091.Connection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn, nil
	}
	conn, err := amqp091.DialConfig(s.url, amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second), Properties: amqp091.Table{"connection_name": "idempo-dlq"}})
	if err != nil {
		return nil, fmt.Errorf("amqpdlq: RabbitMQ at %s is unreachable: %w", redact(s.url), err)
	}
	s.conn = conn
	return conn, nil
}

// Close closes the connection. Reads in progress fail.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn.Close()
	}
	return nil
}

// Read calls fn for every message of the stream queue named topic, oldest
// first, until the end as of the call (see [Options] for how the end is
// found). Each delivery becomes a message exactly as the idempo RabbitMQ
// subscriber converts it ((internal/wire)), without the x-stream-offset
// header, which becomes the entry's Position. A missing queue yields an
// error matching [ErrNoQueue], a classic queue one matching [ErrNotStream].
func (s *Source) Read(ctx context.Context, topic string, fn func(dlqops.Entry) error) error {
	return s.read(ctx, topic, -1, fn)
}

// ReadAfter is [Source.Read] from the stream offset after after[""] (the
// position of the last entry read before; from the first offset when it
// has none): how the dead-letter console (dlq/console) tails a DLQ from
// where its index stopped.
func (s *Source) ReadAfter(ctx context.Context, topic string, after map[string]int64, fn func(dlqops.Entry) error) error {
	last, ok := after[""]
	if !ok || last < 0 {
		last = -1
	}
	return s.read(ctx, topic, last, fn)
}

// read reads topic from the offset after last (-1: from the first).
func (s *Source) read(ctx context.Context, topic string, last int64, fn func(dlqops.Entry) error) error {
	conn, err := s.connection()
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpdlq: open channel: %w", err)
	}
	defer ch.Close() //nolint:errcheck // closing also cancels the consumer
	q, err := ch.QueueDeclarePassive(topic, true, false, false, false, nil)
	if err != nil {
		var ae *amqp091.Error
		if errors.As(err, &ae) && ae.Code == amqp091.NotFound {
			return fmt.Errorf("%w: %q (nothing was ever dead-lettered there, or the name is wrong)", ErrNoQueue, topic)
		}
		return fmt.Errorf("amqpdlq: inspect queue %q: %w", topic, err)
	}
	// The passive declare failing closes the channel; it succeeded, go on.
	if err := ch.Qos(s.opts.Prefetch, 0, false); err != nil {
		return fmt.Errorf("amqpdlq: set prefetch: %w", err)
	}
	tag := "idempo-dlq-" + watermill.NewShortUUID()
	// Not ConsumeWithContext: its cancellation sends basic.cancel from a
	// goroutine of its own, which can deadlock with the deferred Close when
	// ctx ends mid-read. The loop below watches ctx; Close ends the consumer.
	var from any = "first"
	if last >= 0 {
		from = last + 1
	}
	deliveries, err := ch.Consume(topic, tag, false, false, false, false, amqp091.Table{StreamOffsetHeader: from}) //nolint:contextcheck // see above
	if err != nil {
		var ae *amqp091.Error
		if errors.As(err, &ae) && (ae.Code == amqp091.PreconditionFailed || ae.Code == amqp091.NotImplemented) {
			return fmt.Errorf("%w: %q: %s (declare DLQ queues with amqpdlq.NewDLQPublisher)", ErrNotStream, topic, ae.Reason)
		}
		return fmt.Errorf("amqpdlq: consume %q: %w", topic, err)
	}
	// The queue reports how many messages it retains; from an offset on,
	// at most that many less the offsets before it remain (never more, so
	// the wait for a promised message is never a wait for nothing).
	expected := q.Messages
	if last >= 0 {
		expected = max(0, q.Messages-int(last+1))
	}
	read := 0
	for {
		wait := s.opts.Idle
		switch {
		case read < expected:
			wait = s.opts.MaxWait
		case read == 0:
			wait = s.opts.FirstWait
		}
		timer := time.NewTimer(wait)
		var (
			d  amqp091.Delivery
			ok bool
		)
		select {
		case d, ok = <-deliveries:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		timer.Stop()
		if !ok {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("amqpdlq: consumer on %q closed by the broker after %d messages", topic, read)
		}
		_ = d.Ack(false) // on a stream an ack only grants credit
		read++
		pos, ok := d.Headers[StreamOffsetHeader].(int64)
		if !ok {
			pos = last + 1
		}
		if pos <= last {
			continue // never hand out an offset twice
		}
		last = pos
		msg, _ := wire.AMQPMarshaler{}.Unmarshal(d) // never fails
		delete(msg.Metadata, StreamOffsetHeader)
		if err := fn(dlqops.ParseEntry(topic, strconv.FormatInt(pos, 10), msg)); err != nil {
			return err
		}
	}
}
