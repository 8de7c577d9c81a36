// Command kafka publishes a few CloudEvents-style messages, one of them twice,
// to an embedded Kafka-protocol cluster and consumes them with a Watermill
// router handler wrapped by idempo's stack, in a consumer group: the
// duplicate is skipped. It needs no Kafka installation and exits 0 once every
// message has been settled.
//
// To use an existing cluster instead, build the config with
// kafka.ParseURL("kafka://host:9092") and skip embedded.Start.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

const (
	topic    = "orders"
	messages = 5
)

func main() {
	if err := run(os.Stdout); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	cluster, err := embedded.Start(embedded.Config{Partitions: 2})
	if err != nil {
		return err
	}
	defer cluster.Close()
	fmt.Fprintln(out, "embedded cluster at", cluster.URL())

	logger := watermill.NopLogger{}
	pub, err := kafka.NewPublisher(cluster.Config(""), nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := kafka.NewSubscriber(cluster.Config("billing"), nil)
	if err != nil {
		return err
	}
	defer sub.Close()

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	// Dedup by the CloudEvents id; poison messages would go to "orders.dlq"
	// on the same cluster. Use redisstore or sqlstore beyond one process.
	stack, err := middleware.New(middleware.Config{
		Store:   memstore.New(nil),
		DLQ:     dlq.Config{Publisher: pub},
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
	router.AddConsumerHandler("charge-card", topic, sub, func(msg *message.Message) error {
		fmt.Fprintf(out, "charged for event %s (key %s, partition %s, offset %s)\n", msg.Metadata.Get("ce_id"),
			msg.Metadata.Get("idempo_original_key"), msg.Metadata.Get("idempo_original_partition"), msg.Metadata.Get("idempo_original_offset"))
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

	for i := range messages {
		n := i
		if i == messages-1 {
			n = 0 // a duplicate of the first event, as at-least-once publishers produce
		}
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"order":%d}`, n))
		msg.Metadata.Set("ce_id", fmt.Sprintf("order-%d", n))
		msg.Metadata.Set(kafka.PartitionKeyMetadata, fmt.Sprintf("customer-%d", n%2))
		if err := pub.Publish(topic, msg); err != nil {
			return err
		}
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
