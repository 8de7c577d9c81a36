package redisstream_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
)

func TestPubSub(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	var topics sync.Map
	c := rawClient(t, cfg.URL)
	t.Cleanup(func() {
		topics.Range(func(k, _ any) bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.Del(ctx, k.(string)).Err()
			return true
		})
	})
	subCfg := cfg
	// TestContinueAfterErrors nacks many times in a row; nack pacing is
	// covered by TestNackPacing. Entries of closed subscribers are claimed
	// after ClaimIdle.
	subCfg.NackDelay = 10 * time.Millisecond
	subCfg.Lease = time.Second
	subCfg.ClaimIdle = 2 * time.Second
	subCfg.ClaimInterval = 200 * time.Millisecond
	subCfg.Block = 200 * time.Millisecond
	constructor := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := redisstream.NewPublisher(cfg, nil)
		require.NoError(t, err)
		sc := subCfg
		sc.ConsumerGroup = group
		sub, err := redisstream.NewSubscriber(sc, nil)
		require.NoError(t, err)
		// Some suite tests never close their subscribers; Close is idempotent.
		t.Cleanup(func() {
			_ = sub.Close()
			_ = pub.Close()
		})
		return recordingPublisher{pub, &topics}, recordingSubscriber{sub, &topics}
	}
	tests.TestPubSub(t,
		tests.Features{
			// Each consumer group gets every entry; the subscribers of one
			// group compete.
			ConsumerGroups: true,
			// One subscriber (Consumers: 1) receives in stream order; several
			// subscribers of a group interleave.
			GuaranteedOrder:                     false,
			GuaranteedOrderWithSingleSubscriber: true,
			Persistent:                          true,
			ExactlyOnceDelivery:                 false,
			// The shared server must not be restarted: TestServerRestart
			// restarts a private one.
			RestartServiceCommand: nil,
		},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return constructor(t, "") },
		constructor,
	)
}

type recordingPublisher struct {
	*redisstream.Publisher
	topics *sync.Map
}

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.topics.Store(topic, true)
	return p.Publisher.Publish(topic, msgs...)
}

type recordingSubscriber struct {
	*redisstream.Subscriber
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
