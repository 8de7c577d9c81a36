// Command rabbitmq publishes a few CloudEvents-style messages, one of them
// twice, to RabbitMQ and consumes them with a Watermill router handler
// wrapped by idempo's stack: the duplicate is skipped. Dead letters would go
// to a stream queue (amqpdlq.NewDLQPublisher), which `idempo dlq` can list
// and replay. It uses the broker at $AMQP_URL, or
// amqp://guest:guest@127.0.0.1:5672/, and exits 0 once every message has
// been settled.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/amqpdlq"
	"github.com/idempo/idempo/middleware"
)

const messages = 5

func main() {
	if err := run(os.Stdout); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	cfg, err := amqp.ParseURL(cmp.Or(os.Getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/"))
	if err != nil {
		return err
	}
	cfg.Consumers = 2 // the handler processes up to two messages at once
	// The example's queue is deleted by the broker a minute after its last use.
	cfg.QueueArguments = map[string]any{"x-expires": int32(60_000)}
	queue := "idempo_example_orders_" + watermill.NewShortUUID()

	logger := watermill.NopLogger{}
	pub, err := amqp.NewPublisher(cfg, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := amqp.NewSubscriber(cfg, nil)
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
		msg.Metadata.Set("cloudEvents:id", fmt.Sprintf("order-%d", n))
		if err := pub.Publish(queue, msg); err != nil {
			return err
		}
	}

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	// On RabbitMQ the DLQ is a stream queue, declared before the first
	// dead letter, so that it can be read without being consumed.
	dlqPub, err := amqpdlq.NewDLQPublisher(cfg, nil)
	if err != nil {
		return err
	}
	defer dlqPub.Close()
	stack, err := middleware.New(middleware.Config{
		Store:   memstore.New(nil), // redisstore or sqlstore beyond one process
		DLQ:     dlq.Config{Publisher: dlqPub},
		EventID: dedup.CloudEventsID(),
		Observer: middleware.ObserverFunc(func(_ context.Context, e middleware.Event) {
			if e.Kind == middleware.KindOutcome && e.Outcome == middleware.OutcomeDuplicate {
				fmt.Fprintf(out, "skipped duplicate of event %s\n", e.EventID)
			}
		}),
	})
	if err != nil {
		return err
	}
	defer stack.Close()
	router.AddConsumerHandler("charge-card", queue, sub, func(msg *message.Message) error {
		fmt.Fprintf(out, "charged for event %s (message-id %s)\n", msg.Metadata.Get("cloudEvents:id"), msg.Metadata.Get(amqp.MessageIDKey))
		return nil
	}).AddMiddleware(stack.Middleware)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case <-time.After(time.Minute):
		return fmt.Errorf("the router did not start within a minute")
	}

	settled := func() int64 { st := stack.Stats(); return st.Processed + st.Duplicates + st.DeadLettered }
	deadline := time.After(time.Minute)
	for settled() < messages {
		select {
		case <-deadline:
			return fmt.Errorf("settled %d of %d messages in a minute", settled(), messages)
		case err := <-runErr:
			return fmt.Errorf("router stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := router.Close(); err != nil {
		return err
	}
	st := stack.Stats()
	fmt.Fprintf(out, "%d messages: %d processed, %d duplicate skipped\n", messages, st.Processed, st.Duplicates)
	return nil
}
