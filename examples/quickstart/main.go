// Command quickstart wraps a Watermill handler with idempo's stack on the
// in-process GoChannel broker and the in-memory store: every event is
// published twice, and its effect happens once.
package main

import (
	"context"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/middleware"
)

func main() {
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	stack, err := middleware.New(middleware.Config{
		Store:        memstore.New(nil), // redisstore or sqlstore in production
		DLQPublisher: pubsub,            // poison messages go to "orders.dlq"
	})
	if err != nil {
		log.Fatal(err)
	}
	defer stack.Close()

	var charged atomic.Int32
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	router.AddConsumerHandler("charge-card", "orders", pubsub, func(msg *message.Message) error {
		charged.Add(1) // the effect: must happen once per order
		return nil
	}).AddMiddleware(stack.Middleware)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = router.Run(ctx) }()
	<-router.Running()

	for i := range 3 {
		order := message.NewMessage(fmt.Sprintf("order-%d", i), []byte(`{"amount":42}`))
		_ = pubsub.Publish("orders", order, order.Copy()) // at-least-once: a duplicate
	}
	for charged.Load() < 3 || stack.Stats().Duplicates < 3 {
		time.Sleep(10 * time.Millisecond)
	}
	_ = router.Close()
	fmt.Printf("6 deliveries, %d charges, %d duplicates skipped\n", charged.Load(), stack.Stats().Duplicates)
}
