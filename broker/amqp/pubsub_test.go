package amqp_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
)

// TestPubSub runs Watermill's universal Pub/Sub suite against the preset on
// the shared RabbitMQ. Every queue it creates is deleted at the end.
func TestPubSub(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	var topics sync.Map
	t.Cleanup(func() {
		topics.Range(func(k, _ any) bool {
			deleteQueueNow(cfg.URL, k.(string))
			return true
		})
	})

	subCfg := cfg
	// TestContinueAfterErrors nacks 300 times in a row; at the default
	// NackDelay (1 s) that alone takes 5 min. Nack pacing is covered by
	// TestNackRequeuesAfterDelay.
	subCfg.NackDelay = 10 * time.Millisecond
	constructor := func(t *testing.T) (message.Publisher, message.Subscriber) {
		pub, err := amqp.NewPublisher(cfg, nil)
		require.NoError(t, err)
		sub, err := amqp.NewSubscriber(subCfg, nil)
		require.NoError(t, err)
		// TestPublishSubscribeInOrder never closes its subscribers (its
		// deferred Close runs before Subscribe); close everything the suite
		// opened when its test ends. Close is idempotent.
		t.Cleanup(func() {
			_ = sub.Close()
			_ = pub.Close()
		})
		return recordingPublisher{pub, &topics}, recordingSubscriber{sub, &topics}
	}
	tests.TestPubSub(t,
		tests.Features{
			// A topic is one queue whose subscribers compete for messages;
			// several groups each receiving every message would need an
			// exchange per topic, which the preset does not build.
			ConsumerGroups: false,
			// One consumer (Consumers: 1) receives in queue order; with
			// several subscribers RabbitMQ interleaves them.
			GuaranteedOrder:                     true,
			GuaranteedOrderWithSingleSubscriber: true,
			Persistent:                          true,
			ExactlyOnceDelivery:                 false,
			// The shared broker must not be restarted: TestReconnect is
			// skipped here and covered by TestBrokerRestart on a private node.
			RestartServiceCommand: nil,
		},
		constructor,
		nil,
	)
}

type recordingPublisher struct {
	*amqp.Publisher
	topics *sync.Map
}

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.topics.Store(topic, true)
	return p.Publisher.Publish(topic, msgs...)
}

type recordingSubscriber struct {
	*amqp.Subscriber
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
