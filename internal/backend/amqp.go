package backend

import (
	"context"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
)

func init() {
	brokerOpeners[AMQP] = openAMQP
}

// openAMQP connects to RabbitMQ. Every topic is a durable queue; the
// consumers of one group share it (competing consumers), so the group name
// is not needed.
func openAMQP(_ context.Context, spec Spec, logger watermill.LoggerAdapter, o options) (*Broker, error) {
	cfg, err := amqp.ParseURL(spec.Raw)
	if err != nil {
		return nil, err
	}
	if o.fastFailover {
		cfg.NackDelay = 200e6 // 200ms: harness consumers nack often on purpose
	}
	pub, err := amqp.NewPublisher(cfg, logger)
	if err != nil {
		return nil, err
	}
	b := &Broker{Spec: spec, Display: spec.String(), URL: spec.Raw, Publisher: pub, closers: []func() error{pub.Close}}
	b.Prepare = func(_ context.Context, topic, _ string) error { return pub.DeclareQueue(topic) }
	b.NewSubscriber = func(string, int) (message.Subscriber, error) { return amqp.NewSubscriber(cfg, logger) }
	return b, nil
}
