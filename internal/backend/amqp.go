package backend

import (
	"context"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dlq/amqpdlq"
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
	b.NewSubscriber = func(string, int) (message.Subscriber, error) { return amqp.NewSubscriber(cfg, logger) }
	b.NewDLQSubscriber = func(string) (message.Subscriber, error) { return amqp.NewSubscriber(streamCfg, logger) }
	return b, nil
}
