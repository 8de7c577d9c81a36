package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dlq/amqpdlq"
)

// openAMQP connects to RabbitMQ. Every topic is a durable queue; the
// consumers of one group share it (competing consumers), so the group name
// is not needed.
func openAMQP(_ context.Context, spec Spec, logger *slog.Logger, o options) (*Broker, error) {
	cfg, err := amqp.ParseURL(spec.Raw)
	if err != nil {
		return nil, err
	}
	if o.dlq {
		return openAMQPDLQ(spec, cfg, o.replay)
	}
	if o.fastFailover {
		cfg.NackDelay = 200e6 // 200ms: harness consumers nack often on purpose
	}
	pub, err := amqp.NewPublisher(cfg, logger)
	if err != nil {
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Publisher: pub, closers: []func() error{pub.Close}}
	// Dead letters go to stream queues: `idempo dlq` reads them without
	// taking them.
	dlqPub, err := amqpdlq.NewDLQPublisher(cfg, logger)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	b.closers = append(b.closers, dlqPub.Close)
	b.DLQPublisher = dlqPub
	streamCfg := cfg
	streamCfg.QueueArguments = amqpdlq.StreamArguments()
	b.Prepare = func(_ context.Context, topic, _ string) error {
		if strings.HasSuffix(topic, ".dlq") {
			return dlqPub.DeclareQueue(topic)
		}
		return pub.DeclareQueue(topic)
	}
	b.Delete = func(ctx context.Context, topics ...string) error { return deleteQueues(ctx, cfg.URL, topics) }
	b.NewSubscriber = func(string, int) (message.Subscriber, error) { return amqp.NewSubscriber(cfg, logger) }
	b.NewDLQSubscriber = func(string) (message.Subscriber, error) { return amqp.NewSubscriber(streamCfg, logger) }
	return b, nil
}

// openAMQPDLQ opens a source that reads DLQ stream queues without
// consuming them and, with replay, the publisher replays go through (to the
// consumers' queues, and to a stream queue for parked entries).
func openAMQPDLQ(spec Spec, cfg amqp.Config, replay bool) (*Broker, error) {
	src, err := amqpdlq.NewSource(cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Source: src, closers: []func() error{src.Close}}
	if replay {
		pub, err := amqpdlq.NewReplayPublisher(cfg, nil, nil)
		if err != nil {
			_ = b.Close()
			return nil, err
		}
		b.closers = append(b.closers, pub.Close)
		b.Replay = pub
	}
	return b, nil
}

// deleteQueues deletes queues on a connection of its own (the publishers
// may be closed by then). A queue that does not exist is not an error.
func deleteQueues(ctx context.Context, url string, queues []string) error {
	dial := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		dial = max(time.Until(d), time.Millisecond)
	}
	conn, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(dial)})
	if err != nil {
		return fmt.Errorf("delete queues: %w", err)
	}
	defer func() { _ = conn.Close() }()
	var errs []error
	for _, q := range queues {
		// A channel per queue: an error closes the channel it happened on.
		ch, err := conn.Channel()
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("delete queue %q: %w", q, err))...)
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			var aerr *amqp091.Error
			if !errors.As(err, &aerr) || aerr.Code != amqp091.NotFound {
				errs = append(errs, fmt.Errorf("delete queue %q: %w", q, err))
			}
		}
		_ = ch.Close()
	}
	return errors.Join(errs...)
}
