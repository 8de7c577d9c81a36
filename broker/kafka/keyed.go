package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
)

// consumeRetryPause is how long a subscription waits before joining its group
// again after a failed session (a broker outage, a coordinator change).
const consumeRetryPause = time.Second

// keyedSubscriber is the subscriber behind [KeyOrder] and [Unordered]: one
// consumer group member per Subscribe, each partition handed out by a
// [partitionRun].
type keyedSubscriber struct {
	cfg     Config // with defaults
	sc      *sarama.Config
	logger  *slog.Logger
	closing chan struct{}

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // one per subscription
}

func newKeyedSubscriber(cfg Config, sc *sarama.Config, logger *slog.Logger) *keyedSubscriber {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &keyedSubscriber{cfg: cfg, sc: sc, logger: logger, closing: make(chan struct{})}
}

func (s *keyedSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	client, err := sarama.NewClient(s.cfg.Brokers, s.sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	group, err := sarama.NewConsumerGroupFromClient(s.cfg.ConsumerGroup, client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka: join consumer group %q: %w", s.cfg.ConsumerGroup, err)
	}
	out := make(chan *message.Message)
	ctx, cancel := context.WithCancel(ctx)
	h := &groupHandler{
		ctx:       ctx,
		out:       out,
		keyed:     s.cfg.Ordering == KeyOrder,
		max:       s.cfg.MaxInFlight,
		nackDelay: s.cfg.NackDelay,
	}
	log := s.logger.With("topic", topic, "consumer_group", s.cfg.ConsumerGroup)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		errsDone := make(chan struct{})
		go func() {
			defer close(errsDone)
			for err := range group.Errors() {
				log.Warn("kafka: consumer group error", "error", err)
			}
		}()
		go func() {
			select {
			case <-s.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		for ctx.Err() == nil {
			err := group.Consume(ctx, []string{topic}, h)
			if err == nil || ctx.Err() != nil {
				continue
			}
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				break
			}
			log.Warn("kafka: consumer group session failed; joining again", "error", err, "pause", consumeRetryPause)
			select {
			case <-ctx.Done():
			case <-time.After(consumeRetryPause):
			}
		}
		cancel()
		if err := group.Close(); err != nil {
			log.Info("kafka: consumer group close", "error", err)
		}
		<-errsDone
		if err := client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
			log.Info("kafka: client close", "error", err)
		}
	}()
	return out, nil
}

// Close stops every subscription: in-flight messages' contexts are
// cancelled, the watermarks committed, the output channels closed.
func (s *keyedSubscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// groupHandler runs one [partitionRun] per claimed partition.
type groupHandler struct {
	ctx       context.Context // the subscription's
	out       chan<- *message.Message
	keyed     bool // KeyOrder; false is Unordered
	max       int
	nackDelay time.Duration
}

func (*groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	newPartitionRun(h, sess, claim).run()
	return nil
}
