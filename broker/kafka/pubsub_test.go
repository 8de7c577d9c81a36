package kafka_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
)

// TestPubSub runs Watermill's universal Pub/Sub suite against the preset on
// the embedded cluster (one partition per topic, so order is total).
func TestPubSub(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)

	constructor := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pubCfg, subCfg := e.Config(""), e.Config(group)
		// TestContinueAfterErrors nacks 300 times in a row; at the default
		// NackResendSleep (500 ms) that alone takes 150 s. Nack pacing is
		// covered by TestLateGroupAndNack.
		subCfg.NackResendSleep = 10 * time.Millisecond
		pub, err := kafka.NewPublisher(pubCfg, nil)
		require.NoError(t, err)
		sub, err := kafka.NewSubscriber(subCfg, nil)
		require.NoError(t, err)
		// TestPublishSubscribeInOrder never closes its subscribers (its
		// deferred Close runs before Subscribe); close everything the suite
		// opened when its test ends. Close is idempotent.
		t.Cleanup(func() {
			_ = sub.Close()
			_ = pub.Close()
		})
		return pub, sub
	}
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:  true,
			GuaranteedOrder: true,
			Persistent:      true,
			// Kafka redelivers after a crash, never exactly once.
			ExactlyOnceDelivery: false,
			// With a consumer group a new subscriber continues from the
			// group's committed offsets; it does not re-read old messages.
			NewSubscriberReceivesOldMessages: false,
			// The embedded cluster cannot be restarted under the suite's
			// clients: TestReconnect is skipped.
			RestartServiceCommand: nil,
		},
		// One group per test: members of a group that subscribe to different
		// topics would rebalance each other all the time.
		func(t *testing.T) (message.Publisher, message.Subscriber) { return constructor(t, "test_"+t.Name()) },
		constructor,
	)
}
