package nats_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
)

// TestPubSub runs Watermill's universal Pub/Sub suite against the preset on
// the shared NATS server. Every stream it creates is deleted at the end.
func TestPubSub(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	var topics sync.Map
	t.Cleanup(func() {
		topics.Range(func(k, _ any) bool {
			deleteStreamsNow(cfg.URL, k.(string))
			return true
		})
	})
	subCfg := cfg
	// TestContinueAfterErrors nacks hundreds of times in a row; nack pacing
	// is covered by TestNackComesBackAfterDelay.
	subCfg.NackDelay = -1
	// The suite's tests redeliver on purpose; no stack caps deliveries here.
	subCfg.MaxDeliveries, subCfg.MaxDeliver = -1, -1
	// TestNoAck waits for a second message that must not come while the
	// first is unacked: one message in flight per Subscribe.
	subCfg.Consumers = 1
	pubSub := func(t *testing.T, durable string) (message.Publisher, message.Subscriber) {
		pub, err := nats.NewPublisher(cfg, nil)
		require.NoError(t, err)
		c := subCfg
		c.Durable = durable
		sub, err := nats.NewSubscriber(c, nil)
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = sub.Close()
			_ = pub.Close()
		})
		return recordingPublisher{pub, &topics}, recordingSubscriber{sub, &topics}
	}
	tests.TestPubSub(t,
		tests.Features{
			// Each Durable is a consumer group: its subscribers share the
			// messages, another Durable gets every message.
			ConsumerGroups:                      true,
			GuaranteedOrder:                     true,
			GuaranteedOrderWithSingleSubscriber: true,
			Persistent:                          true,
			ExactlyOnceDelivery:                 false,
			// The shared server must not be restarted: TestReconnect is
			// skipped here and covered by TestServerRestart on a private one.
			RestartServiceCommand: nil,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return pubSub(t, "") },
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) { return pubSub(t, group) },
	)
}

type recordingPublisher struct {
	*nats.Publisher
	topics *sync.Map
}

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.topics.Store(topic, true)
	return p.Publisher.Publish(topic, msgs...)
}

type recordingSubscriber struct {
	*nats.Subscriber
	topics *sync.Map
}

func (s recordingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.topics.Store(topic, true)
	return s.Subscriber.Subscribe(ctx, topic)
}

func (s recordingSubscriber) SubscribeInitialize(topic string) error {
	s.topics.Store(topic, true)
	return s.Subscriber.SubscribeInitialize(topic)
}

var _ = time.Second
