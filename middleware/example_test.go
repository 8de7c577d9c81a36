package middleware_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// A handler wrapped by the stack runs once per event ID, however often the
// event is delivered; a hopeless event goes to the DLQ and is acked.
func ExampleNew() {
	dlqPub := newCapture()
	stack, err := middleware.New(middleware.Config{
		Store:  memstore.New(nil),
		DLQ:    dlq.Config{Publisher: dlqPub},
		Logger: quiet,
	})
	if err != nil {
		panic(err)
	}
	defer stack.Close()

	charges := 0
	handler := stack.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		if string(msg.Payload) == "garbage" {
			return nil, retry.Permanent(errors.New("cannot parse order"))
		}
		charges++
		return nil, nil
	})
	deliver := func(id, payload string) error {
		m := message.NewMessage(id, []byte(payload))
		m.SetContext(context.Background())
		_, err := handler(m)
		return err
	}
	fmt.Println(deliver("order-1", "42"), deliver("order-1", "42"), deliver("order-2", "garbage"))
	fmt.Println("charges:", charges)
	fmt.Println("dead letter:", dlqPub.on("idempo.dlq")[0].Metadata.Get("idempo_reason")) // a header docs/dlq.md lists
	// Output:
	// <nil> <nil> <nil>
	// charges: 1
	// dead letter: permanent_error
}
