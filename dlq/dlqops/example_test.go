package dlqops_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution/memstore"
)

// List a DLQ, count what a replay would do, then replay exactly what was
// counted. (In production the source is kafkadlq.Source or amqpdlq.Source,
// the publisher the broker preset's, and the resolution store Redis or SQL.)
func Example() {
	bus := newSliceDLQ() // an in-memory DLQ: a publisher and a dlqops.Source
	dead, _ := dlq.New(dlq.Config{Publisher: bus, Now: func() time.Time { return time.Unix(0, 0) }})
	for _, id := range []string{"order-7", "order-8"} {
		_ = dead.Publish(context.Background(), message.NewMessage(id, []byte(`{"amount":-1}`)), dlq.Info{
			OriginalTopic: "orders", Handler: "billing", Scope: "billing", EventID: id,
			Failure: dlq.Failure{Reason: dlq.ReasonPermanent, Error: "negative amount"},
		})
	}

	ops, err := dlqops.New(dlqops.Config{Source: bus, Resolutions: memstore.New(nil), Publisher: bus, Operator: "alice"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	_ = ops.List(ctx, "orders.dlq", dlqops.Filter{}, func(e dlqops.Entry) error {
		fmt.Println(e.Position, e.EventID, e.Reason, e.Error)
		return nil
	})
	dry, _ := ops.Replay(ctx, "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{DryRun: true})
	fmt.Println("would replay:", dry.Replayed)
	res, err := ops.Replay(ctx, "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{Snapshot: dry.Snapshot})
	fmt.Println("replayed:", res.Replayed, err)
	_ = ops.List(ctx, "orders.dlq", dlqops.Filter{All: true}, func(e dlqops.Entry) error {
		fmt.Println(e.EventID, e.Resolution, "by", e.ResolvedBy)
		return nil
	})
	// Output:
	// 0 order-7 permanent_error negative amount
	// 1 order-8 permanent_error negative amount
	// would replay: 2
	// replayed: 2 <nil>
	// order-7 replayed by alice
	// order-8 replayed by alice
}
