package kafka_test

import (
	"context"
	"fmt"
	"log"
	"slices"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup"
)

// Publish a keyed CloudEvents-style message to the embedded cluster and
// consume it in a consumer group.
func Example() {
	cluster, err := embedded.Start(embedded.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	pub, err := kafka.NewPublisher(cluster.Config(""), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()

	msg := message.NewMessage("6f1c2a8e-0000-4000-8000-000000000001", []byte(`{"total":42}`))
	msg.Metadata.Set("ce_id", "order-created-1")
	msg.Metadata.Set(kafka.PartitionKeyMetadata, "customer-7")
	if err := pub.Publish("orders", msg); err != nil {
		log.Fatal(err)
	}

	sub, err := kafka.NewSubscriber(cluster.Config("billing"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	messages, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}

	got := <-messages
	id, _ := dedup.CloudEventsID()(got)
	fmt.Println("event ID:", id)
	fmt.Println("payload:", string(got.Payload))
	fmt.Println("key:", got.Metadata.Get("idempo_original_key"))
	fmt.Println("partition/offset:", got.Metadata.Get("idempo_original_partition"), got.Metadata.Get("idempo_original_offset"))
	got.Ack()
	// Output:
	// event ID: order-created-1
	// payload: {"total":42}
	// key: customer-7
	// partition/offset: 0 0
}

func ExampleParseURL() {
	cfg, err := kafka.ParseURL("kafka://broker-1:9092,broker-2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.Brokers)

	_, err = kafka.ParseURL("kafka://broker-1:ninety")
	fmt.Println(err)
	// Output:
	// [broker-1:9092 broker-2:9092]
	// kafka: invalid URL "kafka://broker-1:ninety": "broker-1:ninety": port "ninety" is not a number from 1 to 65535
}

// Consume with KeyOrder: the messages of different keys are handed out at
// once (here all three before any is acked), those of one key one at a time.
func ExampleOrdering() {
	cluster, err := embedded.Start(embedded.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	pub, err := kafka.NewPublisher(cluster.Config(""), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	for _, key := range []string{"customer-1", "customer-2", "customer-1", "customer-3"} {
		msg := message.NewMessage(watermill.NewUUID(), []byte(key))
		msg.Metadata.Set(kafka.PartitionKeyMetadata, key)
		if err := pub.Publish("orders", msg); err != nil {
			log.Fatal(err)
		}
	}

	cfg := cluster.Config("billing")
	cfg.Ordering = kafka.KeyOrder
	cfg.MaxInFlight = 16
	sub, err := kafka.NewSubscriber(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	messages, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}

	var held []*message.Message
	for range 3 { // the first message of each key, none acked yet
		held = append(held, <-messages)
	}
	keys := []string{}
	for _, m := range held {
		keys = append(keys, string(m.Payload))
	}
	slices.Sort(keys)
	fmt.Println("in flight:", keys)
	for _, m := range held {
		m.Ack()
	}
	second := <-messages // customer-1's second message, after its first was acked
	fmt.Println("then:", string(second.Payload))
	second.Ack()
	// Output:
	// in flight: [customer-1 customer-2 customer-3]
	// then: customer-1
}
