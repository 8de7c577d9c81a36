package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq/dlqops"
)

// Broker is an opened broker: one publisher and a way to make consumers,
// or, opened [ForDLQ], a source of dead letters and a publisher to replay
// them through.
type Broker struct {
	Spec Spec
	// Display names the broker for the start line (password redacted).
	Display string
	// URL is how another process reaches this broker ("" when it cannot:
	// GoChannel lives in this process only).
	URL string
	// Publisher publishes events, dead letters and outputs.
	Publisher message.Publisher
	// NewSubscriber returns the subscriber for consumer i of one consumer
	// group. On GoChannel every subscriber receives every message (so K
	// consumers are K concurrent twins); on Kafka and RabbitMQ consumers of
	// one group or queue share the messages.
	NewSubscriber func(group string, i int) (message.Subscriber, error)
	// FanOut is true when every subscriber sees every message (GoChannel).
	FanOut bool
	// Ordering is how Kafka subscribers made after it is set hand out a
	// partition's messages (kafka.PartitionOrder by default). Other brokers
	// ignore it.
	Ordering kafka.Ordering
	// DLQPublisher and NewDLQSubscriber publish and read dead-letter
	// topics when the broker keeps them differently (RabbitMQ: stream
	// queues, so `idempo dlq` can list them without consuming). Nil means
	// Publisher and NewSubscriber.
	DLQPublisher     message.Publisher
	NewDLQSubscriber func(group string) (message.Subscriber, error)
	// Prepare declares what must exist before the first publish (queues),
	// so no message is dropped. May be nil.
	Prepare func(ctx context.Context, topic, group string) error
	// Delete removes topics (Kafka) or queues (RabbitMQ) a run created on
	// a shared server. Nil when they vanish with the process (GoChannel,
	// the embedded Kafka cluster). Safe to call after the subscribers have
	// closed; a topic that does not exist is not an error.
	Delete func(ctx context.Context, topics ...string) error
	// Source reads dead-letter topics without consuming them (Kafka:
	// without a consumer group; RabbitMQ: stream queues), and Replay
	// republishes dead letters for dlqops.Ops (nil unless asked for). Both
	// are set only on a broker opened [ForDLQ], which opens nothing else.
	Source  dlqops.Source
	Replay  message.Publisher
	closers []func() error
}

// KeepsOrder reports whether the broker hands out the messages of one key
// in the order they were published: Kafka, unless Ordering is Unordered.
func (b *Broker) KeepsOrder() bool { return b.Spec.Kind == Kafka && b.Ordering != kafka.Unordered }

// DLQ returns the publisher for dead letters.
func (b *Broker) DLQ() message.Publisher {
	if b.DLQPublisher != nil {
		return b.DLQPublisher
	}
	return b.Publisher
}

// DLQSubscriber returns a subscriber that reads dead-letter topics.
func (b *Broker) DLQSubscriber(group string) (message.Subscriber, error) {
	if b.NewDLQSubscriber != nil {
		return b.NewDLQSubscriber(group)
	}
	return b.NewSubscriber(group, 0)
}

// Close closes everything the broker opened, in reverse order.
func (b *Broker) Close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	return errors.Join(errs...)
}

// Store is an opened dedup store.
type Store struct {
	Spec    Spec
	Display string
	// URL is how another process reaches this store ("" for memory).
	URL   string
	Store dedup.Store
	// Drop removes what this run created in the store (its SQL table, its
	// SQLite file, its Redis keys); nil when there is nothing to remove. Only the process that owns the
	// run calls it, at the end.
	Drop func(ctx context.Context) error
	// ServerCPU returns the CPU time the store's server has spent running
	// commands so far (Redis: INFO commandstats), for per-message figures;
	// nil for stores that do not report it.
	ServerCPU func(ctx context.Context) (time.Duration, error)
	// Redis is the store's client on Redis (for the benchmark's floor,
	// which sends the store's scripts without the store); nil elsewhere.
	Redis   *redis.Client
	closers []func() error
}

// Close closes the store's connections.
func (s *Store) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// Option tunes how a broker is opened.
type Option func(*options)

type options struct {
	child        bool
	fastFailover bool
	partitions   int
	dlq, replay  bool
	lease        time.Duration
}

// Orderings maps the --ordering values to the Kafka subscriber's orderings.
var Orderings = map[string]kafka.Ordering{
	"partition": kafka.PartitionOrder,
	"key":       kafka.KeyOrder,
	"unordered": kafka.Unordered,
}

// ParseOrdering parses an --ordering value.
func ParseOrdering(s string) (kafka.Ordering, error) {
	o, ok := Orderings[s]
	if !ok {
		return 0, fmt.Errorf("--ordering %q is not partition, key or unordered", s)
	}
	return o, nil
}

// WithPartitions gives topics of an embedded Kafka cluster n partitions, so
// n consumers of one group all have work. Ignored by other brokers.
func WithPartitions(n int) Option { return func(o *options) { o.partitions = n } }

// WithFastFailover shortens how long a consumer group waits for a member
// that died (session and rebalance timeouts of a few seconds) and how long a
// nacked message waits before it is resent, for harnesses that kill
// consumers and lose acks on purpose. Production defaults stay conservative.
func WithFastFailover() Option { return func(o *options) { o.fastFailover = true } }

// ForDLQ opens the broker for reading dead letters (Broker.Source) and,
// with replay, republishing them (Broker.Replay), and nothing else: no
// publisher, no subscribers. Only Kafka and RabbitMQ keep dead letters.
func ForDLQ(replay bool) Option { return func(o *options) { o.dlq, o.replay = true, replay } }

// OpenBroker opens the broker a spec names: one switch over the public
// constructors of Watermill's GoChannel, broker/kafka and broker/amqp (with
// dlq/kafkadlq and dlq/amqpdlq for dead letters).
func OpenBroker(ctx context.Context, spec Spec, logger *slog.Logger, opts ...Option) (*Broker, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	switch spec.Kind {
	case GoChannel:
		if o.dlq {
			return nil, fmt.Errorf("broker %s keeps no dead letters: they live on a real broker", spec)
		}
		return openGoChannel(spec, logger), nil
	case Kafka:
		return openKafka(ctx, spec, logger, o)
	case AMQP:
		return openAMQP(ctx, spec, logger, o)
	case NATS:
		return openNATS(ctx, spec, logger, o)
	case RedisStream:
		return openRedisStream(ctx, spec, logger, o)
	default:
		return nil, fmt.Errorf("broker %s is not supported", spec)
	}
}

// openGoChannel returns an in-process broker: every subscriber receives
// every message.
func openGoChannel(spec Spec, logger *slog.Logger) *Broker {
	var wl watermill.LoggerAdapter = watermill.NopLogger{}
	if logger != nil {
		wl = watermill.NewSlogLogger(logger)
	}
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, wl)
	return &Broker{
		Spec:      spec,
		Display:   "gochannel (in-process)",
		Publisher: gc,
		FanOut:    true,
		NewSubscriber: func(string, int) (message.Subscriber, error) {
			return nopCloseSubscriber{gc}, nil
		},
		closers: []func() error{gc.Close},
	}
}

// OpenStore opens the store a spec names: one switch over the public
// constructors of dedup/memstore, dedup/redisstore and dedup/sqlstore.
// runID isolates the run's records (its own SQL table, Redis key prefix or
// SQLite file).
func OpenStore(ctx context.Context, spec Spec, runID string) (*Store, error) {
	switch spec.Kind {
	case Memory:
		return &Store{Spec: spec, Display: "memory (in-process)", Store: memstore.New(nil)}, nil
	case Redis:
		return openRedis(ctx, spec, runID)
	case Postgres, MySQL, SQLite:
		return openSQL(ctx, spec, runID)
	default:
		return nil, fmt.Errorf("store %s is not supported", spec)
	}
}

// nopCloseSubscriber shares one GoChannel between publisher and
// subscribers; the router closing a subscriber must not close the channel.
type nopCloseSubscriber struct{ *gochannel.GoChannel }

func (nopCloseSubscriber) Close() error { return nil }
