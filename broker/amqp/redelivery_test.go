package amqp_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/internal/brokertest"
)

// Delayed redelivery end to end on RabbitMQ (the shared test in
// internal/brokertest), its queues cleared first.
func TestDelayedRedeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	topic := uniqueQueue("orders")
	for _, q := range brokertest.RedeliveryTopics(topic) {
		deleteQueue(t, cfg.URL, q)
	}
	pub := newPublisher(t, cfg)
	brokertest.DelayedRedelivery(t, topic, pub, func() message.Subscriber {
		s, err := amqp.NewSubscriber(cfg, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() }) // the router closes it too
		return s
	})
}
