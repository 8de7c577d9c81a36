package kafka_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/internal/brokertest"
)

// Delayed redelivery end to end on Kafka (the shared test in
// internal/brokertest), its topics created at start.
func TestDelayedRedeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	topic := uniqueName("orders")
	e := startEmbedded(t, embedded.Config{Topics: brokertest.RedeliveryTopics(topic)})
	pub := newPublisher(t, e.Config(""))
	brokertest.DelayedRedelivery(t, topic, pub, func() message.Subscriber {
		s, err := kafka.NewSubscriber(e.Config(uniqueName("group")), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() }) // the router closes it too
		return s
	})
}
