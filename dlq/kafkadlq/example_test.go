package kafkadlq_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/kafkadlq"
	"github.com/idempo/idempo/dlq/resolution/memstore"
)

// List the dead letters of a Kafka DLQ topic, then replay them to their
// original topic once the bug is fixed.
func Example() {
	cluster, err := embedded.Start(embedded.Config{}) // your brokers in production
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	pub, err := kafka.NewPublisher(cluster.Config(""), nil)
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	// What the middleware does when a handler fails for good.
	router, _ := dlq.New(dlq.Config{Publisher: pub})
	failed := message.NewMessage("order-7", []byte(`{"amount":-1}`))
	_ = router.Publish(context.Background(), failed, dlq.Info{
		OriginalTopic: "orders", Handler: "billing", Scope: "billing", EventID: "order-7",
		Failure: dlq.Failure{Reason: dlq.ReasonPermanent, Error: "negative amount", LastFailure: time.Now()},
	})

	source, err := kafkadlq.NewSource(cluster.Config(""), nil)
	if err != nil {
		panic(err)
	}
	defer source.Close()
	ops, err := dlqops.New(dlqops.Config{Source: source, Resolutions: memstore.New(nil), Publisher: pub}) // Redis or SQL in production
	if err != nil {
		panic(err)
	}
	_ = ops.List(context.Background(), "orders.dlq", dlqops.Filter{}, func(e dlqops.Entry) error {
		fmt.Println(e.Position, e.EventID, e.Reason, e.Error)
		return nil
	})
	res, err := ops.Replay(context.Background(), "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
	fmt.Println("replayed:", res.Replayed, err)
	err = ops.List(context.Background(), "no.such.dlq", dlqops.Filter{}, func(dlqops.Entry) error { return nil })
	fmt.Println(errors.Is(err, kafkadlq.ErrNoTopic))
	// Output:
	// 0/0 order-7 permanent_error negative amount
	// replayed: 1 <nil>
	// true
}
