package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dlq/natsdlq"
)

// openNATS connects to NATS JetStream. Every topic is a stream of the
// preset; the consumers of one group share one durable consumer named
// after the group, so each group receives every message.
func openNATS(_ context.Context, spec Spec, logger *slog.Logger, o options) (*Broker, error) {
	cfg, err := nats.ParseURL(spec.Raw)
	if err != nil {
		return nil, err
	}
	if o.dlq {
		return openNATSDLQ(spec, cfg, o.replay)
	}
	if o.fastFailover {
		// Harness consumers are killed on purpose and use a 2s lease: their
		// messages come back after 3s instead of 30s.
		cfg.AckWait, cfg.Lease = 3*time.Second, 2*time.Second
		cfg.NackDelay = 200 * time.Millisecond
	}
	pub, err := nats.NewPublisher(cfg, logger)
	if err != nil {
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Publisher: pub, closers: []func() error{pub.Close}}
	dlqPub, err := natsdlq.NewDLQPublisher(cfg, logger)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	b.closers = append(b.closers, dlqPub.Close)
	b.DLQPublisher = dlqPub
	b.Prepare = func(ctx context.Context, topic, _ string) error { return pub.EnsureStream(ctx, topic) }
	b.Delete = func(ctx context.Context, topics ...string) error { return deleteStreams(ctx, cfg, topics) }
	sub := func(group string) (message.Subscriber, error) {
		c := cfg
		c.Durable = durableName(group)
		return nats.NewSubscriber(c, logger)
	}
	b.NewSubscriber = func(group string, _ int) (message.Subscriber, error) { return sub(group) }
	b.NewDLQSubscriber = sub
	return b, nil
}

// durableName turns a consumer group into a durable consumer name (letters,
// digits, '-' and '_').
func durableName(group string) string {
	if group == "" {
		return ""
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, group)
}

// openNATSDLQ opens a source that reads DLQ streams by sequence without
// consuming them and, with replay, the publisher replays go through.
func openNATSDLQ(spec Spec, cfg nats.Config, replay bool) (*Broker, error) {
	src, err := natsdlq.NewSource(cfg)
	if err != nil {
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Source: src, closers: []func() error{src.Close}}
	if replay {
		pub, err := natsdlq.NewReplayPublisher(cfg, nil)
		if err != nil {
			_ = b.Close()
			return nil, err
		}
		b.closers = append(b.closers, pub.Close)
		b.Replay = pub
	}
	return b, nil
}

// deleteStreams deletes the preset's streams of topics on a connection of
// its own. A stream that does not exist is not an error; a stream another
// tool made is never deleted.
func deleteStreams(ctx context.Context, cfg nats.Config, topics []string) error {
	nc, err := natsgo.Connect(cfg.URL, natsgo.Timeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("delete streams: connect to %s: %w", nats.Redact(cfg.URL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("delete streams: %w", err)
	}
	var errs []error
	for _, topic := range topics {
		name, err := nats.StreamName(topic)
		if err != nil {
			continue
		}
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete stream %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
