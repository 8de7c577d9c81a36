package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/idempo/idempo/internal/wire"
)

// ErrClosed is returned by Publish, DeclareQueue and Subscribe after Close.
var ErrClosed = errors.New("amqp: closed")

// ErrConfirmTimeout is returned by Publish when the broker did not confirm a
// message within Config.ConfirmTimeout. The message may still be delivered.
var ErrConfirmTimeout = errors.New("amqp: publisher confirm timed out")

// wamqpConfig builds watermill-amqp's config for c (with defaults applied):
// the durable-queue layout, confirms, pooled channels, and our marshaler.
func (c Config) wamqpConfig() wamqp.Config {
	wc := wamqp.NewDurableQueueConfig(c.URL)
	if c.NonDurable {
		wc = wamqp.NewNonDurableQueueConfig(c.URL)
	}
	wc.Connection.TLSConfig = c.TLS
	wc.Marshaler = wire.AMQPMarshaler{NonDurable: c.NonDurable}
	wc.Queue.Arguments = amqp091.Table(c.QueueArguments)
	wc.Publish.ConfirmDelivery = true
	wc.Publish.ChannelPoolSize = c.ChannelPoolSize
	wc.Consume.Qos.PrefetchCount = c.Prefetch
	return wc
}

// Publisher publishes Watermill messages to RabbitMQ queues. Create it with
// [NewPublisher]. It is safe for concurrent use.
type Publisher struct {
	cfg   Config
	inner *wamqp.Publisher

	mu       sync.RWMutex
	closed   bool
	inflight sync.WaitGroup

	declareMu sync.Mutex
	declared  map[string]bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher connects to cfg.URL and returns a publisher (with defaults
// applied). Publish declares the topic's queue before its first message
// (watermill-amqp's queue layout declares it only when a subscriber starts,
// and RabbitMQ silently drops messages routed to a queue that does not exist
// yet), then sends each message as persistent and waits up to ConfirmTimeout
// for the broker's confirm. The connection is re-established in the
// background after a failure; Publish fails while it is down. A nil logger
// logs nothing.
func NewPublisher(cfg Config, logger *slog.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	inner, err := wamqp.NewPublisher(cfg.wamqpConfig(), watermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("amqp: new publisher for %s: %w", redact(cfg.URL), err)
	}
	return &Publisher{cfg: cfg, inner: inner, declared: map[string]bool{}}, nil
}

// DeclareQueue declares the queue for topic (durable unless NonDurable, with
// QueueArguments), once per publisher. Publish calls it; call it yourself to
// create queues at start-up. It is safe for concurrent use.
func (p *Publisher) DeclareQueue(topic string) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return p.declareQueue(topic)
}

func (p *Publisher) declareQueue(topic string) error {
	p.declareMu.Lock()
	defer p.declareMu.Unlock()
	if p.declared[topic] {
		return nil
	}
	conn := p.inner.Connection()
	if conn == nil || conn.IsClosed() {
		return fmt.Errorf("amqp: declare queue %q: not connected", topic)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: declare queue %q: open channel: %w", topic, err)
	}
	defer ch.Close() //nolint:errcheck // the declaration's outcome is what matters
	if _, err := ch.QueueDeclare(topic, !p.cfg.NonDurable, false, false, false, amqp091.Table(p.cfg.QueueArguments)); err != nil {
		return fmt.Errorf("amqp: declare queue %q: %w", topic, err)
	}
	p.declared[topic] = true
	return nil
}

// Publish sends msgs to the queue named topic, one at a time, returning once
// each is confirmed by the broker, or the first error. A message whose
// confirm does not arrive within ConfirmTimeout yields [ErrConfirmTimeout];
// it may still be delivered. Publish after Close returns [ErrClosed].
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.declareQueue(topic); err != nil {
		return err
	}
	for _, msg := range msgs {
		if err := p.publishOne(topic, msg); err != nil {
			return err
		}
	}
	return nil
}

// publishOne runs watermill-amqp's blocking publish (which waits for the
// confirm without a deadline) in a goroutine and stops waiting after
// ConfirmTimeout. The goroutine ends when the confirm arrives or when Close
// closes the channels.
func (p *Publisher) publishOne(topic string, msg *message.Message) error {
	done := make(chan error, 1)
	p.inflight.Add(1)
	go func() {
		defer p.inflight.Done()
		done <- p.inner.Publish(topic, msg)
	}()
	timer := time.NewTimer(p.cfg.ConfirmTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("amqp: publish %s to %q: %w", msg.UUID, topic, err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("%w after %s: message %s to %q", ErrConfirmTimeout, p.cfg.ConfirmTimeout, msg.UUID, topic)
	}
}

// Close waits for Publish calls to return, closes the connection, then waits
// for publishes still awaiting a confirm to end. It is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.inner.Close()
	p.inflight.Wait()
	return err
}

// Subscriber consumes Watermill messages from RabbitMQ queues. Create it with
// [NewSubscriber]. It is safe for concurrent use.
type Subscriber struct {
	cfg   Config
	inner *wamqp.Subscriber

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber connects to cfg.URL and returns a subscriber (with defaults
// applied).
//
// Subscribe declares the queue named topic and starts Consumers consumers on
// it, each on its own channel with QoS prefetch Prefetch and manual acks,
// merged into one output channel. Each consumer hands out one delivery at a
// time and takes the next only after the previous is acked or nacked, so a
// router handler processes up to Consumers messages at once. An ack acks the
// delivery. A nack holds it for NackDelay, then requeues it; RabbitMQ
// redelivers it (with the _watermill_amqp_redelivered metadata field set to "true"), forever: bound the loop with the
// idempo middleware's delivery cap. Deliveries are converted as the package documentation says,
// which never fails.
//
// RabbitMQ closes a channel whose delivery stays unacked longer than its
// consumer_timeout (30 min by default) and requeues the delivery. The
// connection is re-established in the background after a failure, and
// deliveries unacked at that time are redelivered. Close requeues deliveries
// not yet acked and closes the output channels. A nil logger logs nothing.
func NewSubscriber(cfg Config, logger *slog.Logger) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.checkHold(); err != nil {
		return nil, err
	}
	inner, err := wamqp.NewSubscriber(cfg.wamqpConfig(), watermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("amqp: new subscriber for %s: %w", redact(cfg.URL), err)
	}
	return &Subscriber{cfg: cfg, inner: inner, closing: make(chan struct{})}, nil
}

// SubscribeInitialize declares the queue for topic without consuming.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if err := s.inner.SubscribeInitialize(topic); err != nil {
		return fmt.Errorf("amqp: declare queue %q: %w", topic, err)
	}
	return nil
}

// Subscribe starts consuming the queue named topic; see [NewSubscriber]. The
// returned channel is closed when ctx is done or the subscriber is closed.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	ins := make([]<-chan *message.Message, 0, s.cfg.Consumers)
	for range s.cfg.Consumers {
		in, err := s.inner.Subscribe(ctx, topic)
		if err != nil {
			// Consumers already started stop when the subscriber closes.
			return nil, fmt.Errorf("amqp: subscribe to %q: %w", topic, err)
		}
		ins = append(ins, in)
	}
	out := make(chan *message.Message)
	var merged sync.WaitGroup
	for _, in := range ins {
		merged.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer merged.Done()
			s.relay(in, out)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		merged.Wait()
		close(out)
	}()
	return out, nil
}

// relay hands each delivery from in to out as a copy and settles the
// original when the copy is settled, delaying nacks by NackDelay. It returns
// when in is closed (watermill-amqp closes it after Close or ctx is done).
func (s *Subscriber) relay(in <-chan *message.Message, out chan<- *message.Message) {
	for orig := range in {
		s.forward(orig, out)
	}
}

func (s *Subscriber) forward(orig *message.Message, out chan<- *message.Message) {
	// Every path settles orig: watermill-amqp waits for that before it takes
	// the next delivery (it requeues on its own only when closing).
	ctx := orig.Context()
	select {
	case <-s.closing:
		orig.Nack()
		return
	case <-ctx.Done():
		orig.Nack()
		return
	default:
	}
	msg := orig.Copy()
	msg.SetContext(ctx)
	select {
	case out <- msg:
	case <-s.closing:
		orig.Nack()
		return
	case <-ctx.Done():
		orig.Nack()
		return
	}
	select {
	case <-msg.Acked():
		orig.Ack()
	case <-msg.Nacked():
		if s.cfg.NackDelay > 0 {
			t := time.NewTimer(s.cfg.NackDelay)
			select {
			case <-t.C:
			case <-s.closing:
			case <-ctx.Done():
			}
			t.Stop()
		}
		orig.Nack()
	case <-s.closing:
		orig.Nack()
	case <-ctx.Done():
		orig.Nack()
	}
}

// Close stops every subscription, requeues deliveries not yet acked, closes
// the output channels and the connection. It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	err := s.inner.Close()
	s.wg.Wait()
	return err
}
