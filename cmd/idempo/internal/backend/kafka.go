package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dlq/kafkadlq"
)

// openKafka connects to a Kafka cluster, or starts the embedded one on a
// loopback port when the spec names none.
func openKafka(_ context.Context, spec Spec, logger *slog.Logger, o options) (*Broker, error) {
	b := &Broker{Spec: spec}
	var cfg kafka.Config
	if o.dlq && spec.Embedded {
		return nil, fmt.Errorf("broker %s would be an empty in-process cluster, which holds no dead letters", spec)
	}
	if spec.Embedded && o.child {
		url, stop, err := startEmbeddedChild(o.partitions)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, stop)
		if cfg, err = kafka.ParseURL(url); err != nil {
			_ = stop()
			return nil, err
		}
		b.URL = url
		b.Display = "kafka (embedded, in a child process, " + url + ")"
	} else if spec.Embedded {
		emb, err := embedded.Start(embedded.Config{Partitions: o.partitions})
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, func() error { emb.Close(); return nil })
		cfg = emb.Config("")
		b.URL = emb.URL()
		b.Display = "kafka (embedded, " + b.URL + ")"
	} else {
		c, err := kafka.ParseURL(spec.Raw)
		if err != nil {
			return nil, err
		}
		cfg = c
		b.URL = spec.Raw
		b.Display = spec.String()
		b.Delete = func(_ context.Context, topics ...string) error { return deleteTopics(c.Brokers, topics) }
	}
	if o.dlq {
		return openKafkaDLQ(b, cfg, o.replay)
	}
	if o.fastFailover {
		cfg.NackDelay = 20 * time.Millisecond
		cfg.RebalanceTimeout = 10 * time.Second
		cfg.ConfigureSarama = func(c *sarama.Config) {
			c.Consumer.Group.Session.Timeout = 6 * time.Second
			c.Consumer.Group.Heartbeat.Interval = 2 * time.Second
		}
	}
	pub, err := kafka.NewPublisher(cfg, logger)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	// Close the publisher before the embedded cluster.
	b.closers = append(b.closers, pub.Close)
	b.Publisher = pub
	b.NewSubscriber = func(group string, _ int) (message.Subscriber, error) {
		c := cfg
		c.ConsumerGroup = group
		c.Ordering = b.Ordering
		sub, err := kafka.NewSubscriber(c, logger)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return sub, nil
	}
	return b, nil
}

// openKafkaDLQ opens a source that reads DLQ topics without a consumer
// group and, with replay, the publisher replays go through.
func openKafkaDLQ(b *Broker, cfg kafka.Config, replay bool) (*Broker, error) {
	src, err := kafkadlq.NewSource(cfg, nil)
	if err != nil {
		return nil, err
	}
	b.closers = append(b.closers, src.Close)
	b.Source = src
	if replay {
		pub, err := kafka.NewPublisher(cfg, nil)
		if err != nil {
			_ = b.Close()
			return nil, err
		}
		b.closers = append(b.closers, pub.Close)
		b.Replay = pub
	}
	return b, nil
}

// deleteTopics deletes topics of an external cluster. A topic that does
// not exist is not an error.
func deleteTopics(brokers, topics []string) error {
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_1_0_0
	admin, err := sarama.NewClusterAdmin(brokers, sc)
	if err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	defer func() { _ = admin.Close() }()
	var errs []error
	for _, t := range topics {
		if err := admin.DeleteTopic(t); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic %q: %w", t, err))
		}
	}
	return errors.Join(errs...)
}
