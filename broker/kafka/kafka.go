package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/IBM/sarama"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/internal/wire"
	"github.com/idempo/idempo/retry"
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("kafka: closed")

// NewPublisher returns a Watermill publisher for cfg (with defaults applied):
// each Publish sends its messages one by one and returns once every one is
// acknowledged by all in-sync replicas (RequiredAcks=WaitForAll) through an
// idempotent producer, so sarama's own retries do not duplicate records.
// Messages are converted as the package documentation says; set [PartitionKeyMetadata] to choose
// the record key. Topics are created on first use if the cluster allows it.
//
// The publisher is safe for concurrent use. Close waits for in-flight
// publishes; Publish after Close returns [ErrClosed]. A nil logger logs nothing.
func NewPublisher(cfg Config, logger *slog.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sc, err := cfg.saramaConfig(true)
	if err != nil {
		return nil, err
	}
	p, err := wkafka.NewPublisher(wkafka.PublisherConfig{
		Brokers:               cfg.Brokers,
		Marshaler:             wire.KafkaMarshaler{},
		OverwriteSaramaConfig: sc,
	}, watermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("kafka: new publisher: %w", err)
	}
	return &Publisher{inner: p}, nil
}

// Publisher is the Kafka preset's Watermill publisher (see [NewPublisher]).
// It serialises Close against Publish: watermill-kafka's publisher reads and
// writes its closed flag without synchronisation. Safe for concurrent use.
type Publisher struct {
	mu     sync.RWMutex
	closed bool
	inner  *wkafka.Publisher
}

// Publish sends msgs to topic and returns once every one is acknowledged by
// all in-sync replicas; after Close it returns [ErrClosed].
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return permanentIfTooLarge(p.inner.Publish(topic, msgs...))
}

// permanentIfTooLarge marks a publish error [retry.Permanent] when a record
// is larger than the producer (Producer.MaxMessageBytes) or the broker (the
// topic's max.message.bytes) accepts: no retry can publish it, so an outbox
// relay moves its row to the dead table at once and a stack does not retry
// the publish. Every other error is returned as it is.
func permanentIfTooLarge(err error) error {
	if err == nil || !tooLarge(err) {
		return err
	}
	return retry.Permanent(fmt.Errorf("%w (a record this large can never be published)", err))
}

// tooLarge reports whether err says a record is larger than the producer
// or the broker accepts.
func tooLarge(err error) bool {
	if errors.Is(err, sarama.ErrMessageSizeTooLarge) {
		return true
	}
	var ce sarama.ConfigurationError
	if errors.As(err, &ce) && strings.Contains(string(ce), "larger than configured Producer.MaxMessageBytes") {
		return true
	}
	var pes sarama.ProducerErrors
	if errors.As(err, &pes) {
		for _, pe := range pes {
			if pe != nil && tooLarge(pe.Err) {
				return true
			}
		}
	}
	return false
}

// Close waits for in-flight publishes and closes the producer. Safe to call
// more than once.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.inner.Close()
}

// NewSubscriber returns a Watermill subscriber for cfg (with defaults
// applied) in consumer group cfg.ConsumerGroup, which is required
// ([ErrInvalidConfig], the message saying ConsumerGroup is empty).
//
// Each Subscribe call joins the group as one member with its own connection.
// With [PartitionOrder] (the default), every assigned partition delivers one
// message at a time: the next one only after the previous is acked, so order
// per partition is kept and concurrency equals the number of assigned
// partitions. With [KeyOrder], a partition hands out up to
// Config.MaxInFlight messages at once, one at a time per record key; with
// [Unordered], up to MaxInFlight in any order. The offset committed is then
// the partition's watermark, its lowest offset not yet acked, so a crash
// redelivers only from there; on a rebalance or Close, a revoked partition
// hands out nothing new, cancels the contexts of the messages it handed
// out, gives them 2 s to settle and commits its watermark.
//
// Offsets are committed in the background every AutoCommitInterval, and
// when the subscriber closes cleanly. A nacked message is handed out again
// after NackDelay (the later messages of its key wait behind it), forever:
// bound the loop with the idempo middleware's delivery cap. A group with no
// committed offset starts at the oldest message (see Config.StartFromNewest).
//
// Messages are converted as the package documentation says, never failing; the partition,
// offset and key of each record are in its metadata ("idempo_original_partition",
// "idempo_original_offset", "idempo_original_key").
//
// The subscriber is safe for concurrent use. Close stops every subscription,
// commits marked offsets and closes the output channels; a message handed out
// but not acked by then is redelivered later. A nil logger logs nothing.
func NewSubscriber(cfg Config, logger *slog.Logger) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ConsumerGroup == "" {
		return nil, errMissingConsumerGroup
	}
	cfg = cfg.withDefaults()
	sc, err := cfg.saramaConfig(false)
	if err != nil {
		return nil, err
	}
	if cfg.Ordering != PartitionOrder {
		return &Subscriber{keyed: newKeyedSubscriber(cfg, sc, logger)}, nil
	}
	s, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
		Brokers:               cfg.Brokers,
		Unmarshaler:           wire.KafkaMarshaler{},
		OverwriteSaramaConfig: sc,
		ConsumerGroup:         cfg.ConsumerGroup,
		NackResendSleep:       cfg.NackDelay,
	}, watermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("kafka: new subscriber: %w", err)
	}
	return &Subscriber{inner: s}, nil
}

// Subscriber is the Kafka preset's Watermill subscriber (see
// [NewSubscriber]). It hides watermill-kafka's SubscribeInitialize, which
// fails unless topic details are configured; topics are created on first use
// instead. Safe for concurrent use.
type Subscriber struct {
	inner *wkafka.Subscriber // PartitionOrder
	keyed *keyedSubscriber   // KeyOrder and Unordered
}

// Subscribe joins the consumer group for topic as one member and returns its
// messages; the channel closes when ctx ends or the subscriber closes.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	subscribe := s.inner.Subscribe
	if s.keyed != nil {
		subscribe = s.keyed.Subscribe
	}
	ch, err := subscribe(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscribe to %q: %w", topic, err)
	}
	return ch, nil
}

// Close stops every subscription and commits marked offsets.
func (s *Subscriber) Close() error {
	if s.keyed != nil {
		return s.keyed.Close()
	}
	return s.inner.Close()
}
