package redisstream_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/broker/redisstream"
)

// Append an entry the way a producer that is not Watermill does (an id
// field, no UUID) to a stream on 127.0.0.1:6379 and consume it.
func Example() {
	cfg, err := redisstream.ParseURL("redis-stream://127.0.0.1:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	stream := "idempo_example_orders_" + watermill.NewShortUUID()

	producer := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer producer.Close()
	defer producer.Del(context.Background(), stream)
	if err := producer.XAdd(context.Background(), &redis.XAddArgs{
		Stream: stream, Values: map[string]any{"id": "order-created-1", "payload": `{"total":42}`},
	}).Err(); err != nil {
		log.Fatal(err)
	}

	// The consumer group is created at the stream's start: the entry added
	// before the first subscriber is read.
	sub, err := redisstream.NewSubscriber(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	messages, err := sub.Subscribe(ctx, stream)
	if err != nil {
		log.Fatal(err)
	}

	var got *message.Message
	select {
	case got = <-messages:
	case <-time.After(10 * time.Second):
		log.Fatal("no message")
	}
	id, _ := redisstream.MessageID()(got)
	fmt.Println("event ID:", id)
	fmt.Println("deliveries:", got.Metadata.Get(redisstream.DeliveryCountKey))
	fmt.Println("payload:", string(got.Payload))
	got.Ack()
	// Output:
	// event ID: order-created-1
	// deliveries: 1
	// payload: {"total":42}
}

func ExampleParseURL() {
	cfg, err := redisstream.ParseURL("rediss-stream://app:s3cret@redis.internal:6379/2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.URL != "")

	_, err = redisstream.ParseURL("redis-stream://app:s3cret@redis.internal:6379/orders")
	fmt.Println(err)
	// Output:
	// true
	// redisstream: invalid URL "redis-stream://app:xxxxx@redis.internal:6379/orders": the path must be a database number
}
