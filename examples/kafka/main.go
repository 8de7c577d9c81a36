// Command kafka publishes a few CloudEvents-style messages to an embedded
// Kafka-protocol cluster and consumes them with a Watermill router handler in
// a consumer group. It needs no Kafka installation and exits 0 once every
// message has been handled.
//
// To use an existing cluster instead, build the config with
// kafka.ParseURL("kafka://host:9092") and skip StartEmbedded.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
)

const (
	topic    = "orders"
	messages = 5
)

func main() {
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run() error {
	cluster, err := kafka.StartEmbedded(kafka.WithPartitions(2))
	if err != nil {
		return err
	}
	defer cluster.Close()
	fmt.Println("embedded cluster at", cluster.URL())

	logger := watermill.NopLogger{}
	pub, err := kafka.NewPublisher(cluster.Config(""), logger)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := kafka.NewSubscriber(cluster.Config("billing"), logger)
	if err != nil {
		return err
	}
	defer sub.Close()

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	var handled atomic.Int32
	extract := dedup.CloudEventsID()
	// The idempo middleware stack goes on this handler (AddMiddleware) to
	// skip the duplicate below; this example shows the broker side only.
	router.AddConsumerHandler("charge-card", topic, sub, func(msg *message.Message) error {
		id, err := extract(msg)
		if err != nil {
			return err
		}
		fmt.Printf("handled event %s (key %s, partition %s, offset %s)\n", id,
			msg.Metadata.Get(dlq.KeyPartitionKey), msg.Metadata.Get(dlq.KeyPartition), msg.Metadata.Get(dlq.KeyOffset))
		handled.Add(1)
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	<-router.Running()

	for i := range messages {
		n := i
		if i == messages-1 {
			n = 0 // a duplicate of the first event, as at-least-once publishers produce
		}
		msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"order":%d}`, n))
		msg.Metadata.Set(dedup.CloudEventsIDKafka, fmt.Sprintf("order-%d", n))
		msg.Metadata.Set(kafka.PartitionKeyMetadata, fmt.Sprintf("customer-%d", n%2))
		if err := pub.Publish(topic, msg); err != nil {
			return err
		}
	}

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
