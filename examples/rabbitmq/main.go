// Command rabbitmq publishes a few CloudEvents-style messages to RabbitMQ and
// consumes them with a Watermill router handler. It uses the broker at
// $AMQP_URL, or amqp://guest:guest@127.0.0.1:5672/, and exits 0 once every
// message has been handled.
package main

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup"
)

const messages = 5

func main() {
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := amqp.ParseURL(cmp.Or(os.Getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/"))
	if err != nil {
		return err
	}
	cfg.Consumers = 2 // the handler processes up to two messages at once
	// The example's queue is deleted by the broker a minute after its last use.
	cfg.QueueArguments = map[string]any{"x-expires": int32(60_000)}
	queue := "idempo_example_orders_" + watermill.NewShortUUID()

	logger := watermill.NopLogger{}
	pub, err := amqp.NewPublisher(cfg, logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := amqp.NewSubscriber(cfg, logger)
	if err != nil {
		return err
	}
	defer sub.Close()

	// Published before any subscriber exists: the publisher declares the
	// queue first, so these are kept.
	for i := range messages {
		n := i
		if i == messages-1 {
			n = 0 // a duplicate of the first event, as at-least-once publishers produce
		}
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"order":%d}`, n))
		msg.Metadata.Set(dedup.CloudEventsIDAMQP, fmt.Sprintf("order-%d", n))
		if err := pub.Publish(queue, msg); err != nil {
			return err
		}
	}

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	var handled atomic.Int32
	extract := dedup.CloudEventsID()
	// The idempo middleware stack goes on this handler (AddMiddleware) to
	// skip the duplicate above; this example shows the broker side only.
	router.AddConsumerHandler("charge-card", queue, sub, func(msg *message.Message) error {
		id, err := extract(msg)
		if err != nil {
			return err
		}
		fmt.Printf("handled event %s (message-id %s)\n", id, msg.Metadata.Get(amqp.MessageIDKey))
		handled.Add(1)
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	<-router.Running()

	deadline := time.After(time.Minute)
	for handled.Load() < messages {
		select {
		case <-deadline:
			return fmt.Errorf("handled %d of %d messages in a minute", handled.Load(), messages)
		case err := <-runErr:
			return fmt.Errorf("router stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := router.Close(); err != nil {
		return err
	}
	fmt.Printf("%d messages handled\n", handled.Load())
	return nil
}
