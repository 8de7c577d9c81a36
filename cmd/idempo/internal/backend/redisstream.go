package backend

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dlq/redisstreamdlq"
)

// WithLease tells brokers with a redelivery clock of their own the idempo
// stack's Lease, so that the clock outlasts it (Redis Streams: entries are
// claimed from a dead consumer after 2 × Lease). Defaults to the stack's
// default, 30s.
func WithLease(d time.Duration) Option { return func(o *options) { o.lease = d } }

// openRedisStream connects to Redis Streams. Every topic is a stream; the
// consumers of one group read it through the consumer group of that name
// (each under a consumer name of its own) and share its entries.
func openRedisStream(ctx context.Context, spec Spec, logger *slog.Logger, o options) (*Broker, error) {
	cfg, err := redisstream.ParseURL(spec.Raw)
	if err != nil {
		return nil, err
	}
	client, err := redisstream.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = client.Ping(pctx).Err()
	cancel()
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis at %s %s: %w", spec, reach(err), err)
	}
	if o.dlq {
		_ = client.Close()
		return openRedisStreamDLQ(spec, cfg)
	}
	cfg.Lease = o.lease
	if o.fastFailover {
		cfg.NackDelay = 200 * time.Millisecond // harness consumers nack often on purpose
	}
	pub, err := redisstream.NewPublisher(cfg, logger)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Publisher: pub, closers: []func() error{client.Close, pub.Close}}
	// Dead letters go to streams that are never trimmed; `idempo dlq` reads
	// them with XRANGE, without a consumer group.
	dlqPub, err := redisstreamdlq.NewDLQPublisher(cfg, logger)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	b.closers = append(b.closers, dlqPub.Close)
	b.DLQPublisher = dlqPub
	// The group is created at the stream's start by its first subscriber
	// too; creating it here names the stream before the first publish.
	b.Prepare = func(ctx context.Context, topic, group string) error {
		if strings.HasSuffix(topic, ".dlq") {
			return nil
		}
		err := client.XGroupCreateMkStream(ctx, topic, cmp.Or(group, redisstream.DefaultConsumerGroup), "0").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("create group %q on stream %q: %w", group, topic, err)
		}
		return nil
	}
	b.Delete = func(ctx context.Context, topics ...string) error {
		if len(topics) == 0 {
			return nil
		}
		if err := client.Del(ctx, topics...).Err(); err != nil {
			return fmt.Errorf("delete streams: %w", err)
		}
		return nil
	}
	b.NewSubscriber = func(group string, _ int) (message.Subscriber, error) {
		c := cfg
		c.ConsumerGroup = group
		return redisstream.NewSubscriber(c, logger)
	}
	b.NewDLQSubscriber = func(group string) (message.Subscriber, error) {
		c := cfg
		c.ConsumerGroup = group
		return redisstream.NewSubscriber(c, logger)
	}
	return b, nil
}

// openRedisStreamDLQ opens a source that reads DLQ streams without
// consuming them and the publisher replays go through.
func openRedisStreamDLQ(spec Spec, cfg redisstream.Config) (*Broker, error) {
	src, err := redisstreamdlq.NewSource(cfg.URL)
	if err != nil {
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Source: src, closers: []func() error{src.Close}}
	pub, err := redisstreamdlq.NewReplayPublisher(cfg, nil)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	b.closers = append(b.closers, pub.Close)
	b.Replay = pub
	return b, nil
}
