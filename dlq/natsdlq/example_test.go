package natsdlq_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/natsdlq"
)

// List a DLQ stream twice: reading consumes nothing.
func ExampleSource() {
	cfg, err := nats.ParseURL("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	topic := "idempo_example.orders." + watermill.NewShortUUID() + ".dlq"
	pub, err := natsdlq.NewDLQPublisher(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	for _, id := range []string{"entry-1", "entry-2"} {
		if err := pub.Publish(topic, message.NewMessage(id, nil)); err != nil {
			log.Fatal(err)
		}
	}
	src, err := natsdlq.NewSource(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	for range 2 {
		_ = src.Read(context.Background(), topic, func(e dlqops.Entry) error {
			fmt.Println(e.ID, "at", e.Position)
			return nil
		})
	}
	name, _ := nats.StreamName(topic)
	_ = deleteStream(name)
	// Output:
	// entry-1 at 1
	// entry-2 at 2
	// entry-1 at 1
	// entry-2 at 2
}
