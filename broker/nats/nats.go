package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempo/idempo/internal/progress"
	"github.com/idempo/idempo/internal/wire"
)

// ErrClosed is returned by Publish, EnsureStream and Subscribe after Close.
var ErrClosed = errors.New("nats: closed")

// fetchWait is how long one pull request waits for a message; it bounds
// how long Close and a cancelled Subscribe wait for an idle worker.
const fetchWait = time.Second

// connect opens a connection that reconnects forever.
func connect(cfg Config, name string, logger *slog.Logger) (*natsgo.Conn, jetstream.JetStream, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []natsgo.Option{
		natsgo.Name(name),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250 * time.Millisecond),
		natsgo.Timeout(10 * time.Second),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil {
				logger.Warn("nats: disconnected; reconnecting", "error", err)
			}
		}),
		natsgo.ReconnectHandler(func(*natsgo.Conn) { logger.Info("nats: reconnected") }),
	}
	if cfg.TLS != nil {
		opts = append(opts, natsgo.Secure(cfg.TLS))
	}
	nc, err := natsgo.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nats: connect to %s: %w", Redact(cfg.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("nats: JetStream on %s: %w", Redact(cfg.URL), err)
	}
	return nc, js, nil
}

// streams finds or creates the stream of each topic, once per client.
type streams struct {
	cfg Config
	js  jetstream.JetStream

	mu    sync.Mutex
	known map[string]string // topic → stream
}

// ensure returns the stream that holds topic's subject: the one that
// already captures it, else a new file-backed stream named
// [StreamName](topic).
func (s *streams) ensure(ctx context.Context, topic string) (stream, subject string, err error) {
	subject, err = Subject(topic)
	if err != nil {
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.known[topic]; ok {
		return st, subject, nil
	}
	name, err := StreamName(topic)
	if err != nil {
		return "", "", err
	}
	for attempt := 0; ; attempt++ {
		st, err := s.js.StreamNameBySubject(ctx, subject)
		if err == nil {
			s.known[topic] = st
			return st, subject, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return "", "", fmt.Errorf("nats: find the stream of %q: %w", subject, err)
		}
		_, err = s.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       name,
			Subjects:   []string{subject},
			Storage:    jetstream.FileStorage,
			Retention:  jetstream.LimitsPolicy,
			Duplicates: s.cfg.DuplicateWindow,
			MaxAge:     s.cfg.MaxAge,
		})
		if err == nil {
			s.known[topic] = name
			return name, subject, nil
		}
		// Another client created it (or one like it) meanwhile: look again.
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt == 0 {
			continue
		}
		return "", "", fmt.Errorf("nats: create stream %q for subject %q: %w", name, subject, err)
	}
}

func (s *streams) forget(topic string) {
	s.mu.Lock()
	delete(s.known, topic)
	s.mu.Unlock()
}

// Publisher publishes Watermill messages to JetStream. Create it with
// [NewPublisher]. It is safe for concurrent use.
type Publisher struct {
	cfg     Config
	nc      *natsgo.Conn
	js      jetstream.JetStream
	streams *streams

	mu     sync.RWMutex
	closed bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher connects to cfg.URL and returns a publisher (with defaults
// applied). Publish makes sure the topic's stream exists before its first
// message (see [Publisher.EnsureStream]), sends each message to the topic's
// subject with Nats-Msg-Id set from the message UUID (or [MsgIDKey]) and
// waits up to PublishTimeout for JetStream's ack, so a message published
// again within the stream's DuplicateWindow (a publisher retry after a lost
// ack) is stored once. The connection reconnects in the background; Publish
// fails while it is down. A nil logger logs nothing.
func NewPublisher(cfg Config, logger *slog.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	nc, js, err := connect(cfg, "idempo-publisher", logger)
	if err != nil {
		return nil, err
	}
	return &Publisher{cfg: cfg, nc: nc, js: js, streams: &streams{cfg: cfg, js: js, known: map[string]string{}}}, nil
}

// EnsureStream makes sure a stream captures topic's subject, creating one
// named [StreamName](topic) when none does, once per publisher. Publish
// calls it; call it yourself to create streams at start-up.
func (p *Publisher) EnsureStream(ctx context.Context, topic string) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	_, _, err := p.streams.ensure(ctx, topic)
	return err
}

// Publish sends msgs to topic's subject, one at a time, returning once
// JetStream acknowledged each, or the first error. Publish after Close
// returns [ErrClosed].
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.PublishTimeout)
	defer cancel()
	stream, subject, err := p.streams.ensure(ctx, topic)
	if err != nil {
		return err
	}
	for _, msg := range msgs {
		if err := p.publishOne(stream, subject, msg); err != nil {
			p.streams.forget(topic) // the stream may have been deleted
			return fmt.Errorf("nats: publish %s to %q: %w", msg.UUID, topic, err)
		}
	}
	return nil
}

func (p *Publisher) publishOne(stream, subject string, msg *message.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.PublishTimeout)
	defer cancel()
	_, err := p.js.PublishMsg(ctx, wire.NATSMarshal(subject, msg), jetstream.WithExpectStream(stream))
	return err
}

// Close waits for Publish calls to return and closes the connection. It is
// idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.nc.Close()
	return nil
}

// Subscriber consumes Watermill messages from JetStream. Create it with
// [NewSubscriber]. It is safe for concurrent use.
type Subscriber struct {
	cfg     Config
	nc      *natsgo.Conn
	js      jetstream.JetStream
	streams *streams
	logger  *slog.Logger

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber checks that JetStream's clocks agree with idempo's (AckWait
// at least Lease, MaxDeliver above MaxDeliveries, MaxAge room for every
// delivery; the error names each figure), connects to cfg.URL and returns a
// subscriber (with defaults applied).
//
// Subscribe creates or updates the durable pull consumer Durable on the
// topic's stream (explicit acks, AckWait, MaxDeliver, from the first
// message) and starts Consumers workers. Each fetches one message, hands it
// out, and waits for its ack or nack before fetching the next. Each message's
// context carries a Touch that sends JetStream an in-progress ack, which the
// idempo stack's lease keeper calls after each lease extension, so AckWait
// does not run out while the handler runs. An ack is confirmed by the
// server (a double ack); a nack is a negative ack with NackDelay, so the
// message comes back after that delay. The metadata carries JetStream's
// delivery count ([NumDeliveredKey]) and stream sequence ([StreamSeqKey]);
// conversion never fails. A nil logger logs nothing.
func NewSubscriber(cfg Config, logger *slog.Logger) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.checkClocks(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	nc, js, err := connect(cfg, "idempo-subscriber", logger)
	if err != nil {
		return nil, err
	}
	return &Subscriber{
		cfg: cfg, nc: nc, js: js, logger: logger,
		streams: &streams{cfg: cfg, js: js, known: map[string]string{}},
		closing: make(chan struct{}),
	}, nil
}

// SubscribeInitialize creates topic's stream and durable consumer without
// consuming.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	_, err := s.consumer(ctx, topic)
	return err
}

// consumerName returns the durable consumer's name on stream: Durable on
// the preset's own stream, Durable and the escaped topic on a stream that
// captures other subjects too.
func (s *Subscriber) consumerName(stream, topic string) string {
	own, _ := StreamName(topic)
	if stream == own {
		return s.cfg.Durable
	}
	return s.cfg.Durable + "_" + own
}

func (s *Subscriber) consumer(ctx context.Context, topic string) (jetstream.Consumer, error) {
	stream, subject, err := s.streams.ensure(ctx, topic)
	if err != nil {
		return nil, err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       s.consumerName(stream, topic),
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: max(1000, s.cfg.Consumers),
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		s.streams.forget(topic)
		return nil, fmt.Errorf("nats: consumer %q on stream %q: %w", cc.Durable, stream, err)
	}
	return cons, nil
}

// Subscribe starts consuming topic; see [NewSubscriber]. The returned
// channel is closed when ctx is done or the subscriber is closed.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	ictx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	cons, err := s.consumer(ictx, topic)
	cancel()
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	var workers sync.WaitGroup
	for range s.cfg.Consumers {
		workers.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer workers.Done()
			s.work(ctx, topic, cons, out)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		workers.Wait()
		close(out)
	}()
	return out, nil
}

// work fetches and hands out one message at a time until ctx is done or
// the subscriber closes.
func (s *Subscriber) work(ctx context.Context, topic string, cons jetstream.Consumer, out chan<- *message.Message) {
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		default:
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(fetchWait))
		got := false
		if err == nil {
			for jm := range batch.Messages() {
				got = true
				s.handle(ctx, jm, out)
			}
			err = batch.Error()
		}
		if got || err == nil || errors.Is(err, natsgo.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			backoff = 100 * time.Millisecond
			continue
		}
		s.logger.Warn("nats: fetch failed; retrying", "topic", topic, "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.closing:
		}
		t.Stop()
		backoff = min(2*backoff, 2*time.Second)
	}
}

// handle hands one message out and settles it with JetStream.
func (s *Subscriber) handle(ctx context.Context, jm jetstream.Msg, out chan<- *message.Message) {
	msg := wire.NATSUnmarshal(jm.Headers(), jm.Data())
	if md, err := jm.Metadata(); err == nil {
		wire.NATSSetDelivery(msg, md.Sequence.Stream, md.NumDelivered)
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(progress.Attach(mctx, func(context.Context) error { return jm.InProgress() }))
	select {
	case out <- msg:
	case <-s.closing:
		s.settle(jm, jm.Nak)
		return
	case <-ctx.Done():
		s.settle(jm, jm.Nak)
		return
	}
	select {
	case <-msg.Acked():
		// The ack must reach the server even when ctx ended meanwhile.
		actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
		defer acancel()
		s.settle(jm, func() error { return jm.DoubleAck(actx) })
	case <-msg.Nacked():
		if s.cfg.NackDelay > 0 {
			s.settle(jm, func() error { return jm.NakWithDelay(s.cfg.NackDelay) })
		} else {
			s.settle(jm, jm.Nak)
		}
	case <-s.closing:
		s.settle(jm, jm.Nak)
	case <-ctx.Done():
		s.settle(jm, jm.Nak)
	}
}

func (s *Subscriber) settle(jm jetstream.Msg, f func() error) {
	if err := f(); err != nil {
		// The message comes back after AckWait; the stack deduplicates it.
		s.logger.Warn("nats: settling a message failed; JetStream will redeliver it after AckWait",
			"subject", jm.Subject(), "error", err)
	}
}

// Close stops every subscription, returns messages not yet acked to
// JetStream (a negative ack without delay), closes the output channels and
// the connection. It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	s.nc.Close()
	return nil
}
