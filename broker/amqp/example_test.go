package amqp_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup"
)

// Publish a CloudEvents-style message to RabbitMQ on 127.0.0.1:5672 and
// consume it.
func Example() {
	cfg, err := amqp.ParseURL("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		log.Fatal(err)
	}
	// Let the broker delete the example's queue a minute after its last use.
	cfg.QueueArguments = map[string]any{"x-expires": int32(60_000)}
	queue := "idempo_example_orders_" + watermill.NewShortUUID()

	pub, err := amqp.NewPublisher(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()

	msg := message.NewMessage("6f1c2a8e-0000-4000-8000-000000000001", []byte(`{"total":42}`))
	msg.Metadata.Set("cloudEvents:id", "order-created-1")
	// The queue is declared before the first publish, so nothing is lost
	// although no subscriber exists yet.
	if err := pub.Publish(queue, msg); err != nil {
		log.Fatal(err)
	}

	sub, err := amqp.NewSubscriber(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	messages, err := sub.Subscribe(ctx, queue)
	if err != nil {
		log.Fatal(err)
	}

	got := <-messages
	id, _ := dedup.CloudEventsID()(got)
	mid, _ := amqp.MessageID()(got)
	fmt.Println("event ID:", id)
	fmt.Println("message-id:", mid)
	fmt.Println("payload:", string(got.Payload))
	got.Ack()
	// Output:
	// event ID: order-created-1
	// message-id: 6f1c2a8e-0000-4000-8000-000000000001
	// payload: {"total":42}
}

func ExampleParseURL() {
	cfg, err := amqp.ParseURL("amqp://app:s3cret@rabbit.internal:5672/orders")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.URL != "")

	_, err = amqp.ParseURL("amqp://app:s3cret@rabbit.internal:5672/a/b")
	fmt.Println(err)
	// Output:
	// true
	// amqp: invalid URL "amqp://app:xxxxx@rabbit.internal:5672/a/b": the path must be one vhost name (escape '/' as %2F)
}
