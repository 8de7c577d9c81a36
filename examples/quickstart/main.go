// Command quickstart wraps a Watermill handler with idempo's stack on the
// in-process GoChannel broker and the in-memory store: an event delivered
// twice is charged once, and a poison event goes to the dead-letter queue,
// where a subscriber prints it.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// charge is the effect that must happen once per order.
func charge(_ context.Context, orderID string, payload []byte) error {
	if string(payload) == "garbage" {
		// Hopeless: no retries, straight to the dead-letter queue.
		return retry.Permanent(errors.New("cannot parse order"))
	}
	fmt.Printf("charged %s %s\n", orderID, payload)
	return nil // any other error is retried with backoff
}

func main() {
	// Each Publish waits until its message is handled: the output is in order.
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubsub.Close()
	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil),             // redisstore or sqlstore in production
		DLQ:   dlq.Config{Publisher: pubsub}, // in production a durable broker (New warns about GoChannel)
	})
	if err != nil {
		log.Fatal(err)
	}
	defer stack.Close()

	// Poison messages go to "orders.dlq". GoChannel keeps nothing and drops
	// what no subscriber waits for, so subscribe before anything can fail.
	deadLetters, err := pubsub.Subscribe(context.Background(), "orders.dlq")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for msg := range deadLetters {
			e := dlqops.ParseEntry("orders.dlq", "", msg) // the copy's metadata, typed
			fmt.Printf("dead letter %s: %s (%s)\n", e.EventID, e.Error, e.Reason)
			msg.Ack()
		}
	}()

	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	router.AddConsumerHandler("charge-card", "orders", pubsub, func(msg *message.Message) error {
		return charge(msg.Context(), msg.UUID, msg.Payload) // runs once per order ID
	}).AddMiddleware(stack.Middleware)
	go func() { _ = router.Run(context.Background()) }()
	<-router.Running()

	order := message.NewMessage("order-1", []byte(`{"amount":42}`))
	for _, msg := range []*message.Message{
		order,
		order.Copy(), // at-least-once delivery: the same event again
		message.NewMessage("order-2", []byte("garbage")), // a poison event
		message.NewMessage("order-3", []byte(`{"amount":7}`)),
	} {
		if err := pubsub.Publish("orders", msg); err != nil {
			log.Fatal(err)
		}
	}
	_ = router.Close()
	s := stack.Stats()
	fmt.Printf("4 deliveries: %d charged, %d duplicate skipped, %d dead-lettered\n",
		s.Processed, s.Duplicates, s.DeadLettered)
}
