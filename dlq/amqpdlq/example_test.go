package amqpdlq_test

import (
	"context"
	"fmt"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/amqpdlq"
	"github.com/idempo/idempo/dlq/dlqops"
	resmem "github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/middleware"
)

// Dead-letter to a stream queue, list it and replay it. (Needs RabbitMQ;
// not run as a test.)
func Example() {
	url := "amqp://guest:guest@localhost:5672/"
	store := memstore.New(nil) // a shared store (Redis, SQL) in production

	// The consumer's stack publishes dead letters to stream queues.
	dlqPub, err := amqpdlq.NewDLQPublisher(amqp.Config{URL: url}, nil)
	if err != nil {
		panic(err)
	}
	defer dlqPub.Close()
	stack, err := middleware.New(middleware.Config{Store: store, DLQ: dlq.Config{Publisher: dlqPub}})
	if err != nil {
		panic(err)
	}
	defer stack.Close()
	// ... router.AddConsumerHandler("billing", "orders", sub, ...) with stack.Middleware

	// Later: inspect and replay "orders.dlq".
	source, err := amqpdlq.NewSource(url, nil)
	if err != nil {
		panic(err)
	}
	defer source.Close()
	replays, err := amqpdlq.NewReplayPublisher(amqp.Config{URL: url}, nil, nil)
	if err != nil {
		panic(err)
	}
	defer replays.Close()
	ops, err := dlqops.New(dlqops.Config{Source: source, Resolutions: resmem.New(nil), Publisher: replays}) // Redis or SQL in production
	if err != nil {
		panic(err)
	}
	_ = ops.List(context.Background(), "orders.dlq", dlqops.Filter{}, func(e dlqops.Entry) error {
		fmt.Println(e.Position, e.ID, e.Reason, e.Error)
		return nil
	})
	res, err := ops.Replay(context.Background(), "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
	fmt.Println(res.Replayed, err)
}
