package nats_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/internal/brokertest"
)

// Delayed redelivery end to end on NATS JetStream (the shared test in
// internal/brokertest), its streams deleted at the end.
func TestDelayedRedeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	topic := uniqueTopic("orders")
	deleteStreams(t, cfg.URL, brokertest.RedeliveryTopics(topic)...)
	pub := newPublisher(t, cfg)
	brokertest.DelayedRedelivery(t, topic, pub, func() message.Subscriber {
		s, err := nats.NewSubscriber(cfg, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() }) // the router closes it too
		return s
	})
}
