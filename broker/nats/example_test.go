package nats_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempo/idempo/broker/nats"
)

// Publish to NATS JetStream on 127.0.0.1:4222, twice with one UUID (a
// publisher retry), and consume: the stream holds the message once.
func Example() {
	cfg, err := nats.ParseURL("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	topic := "idempo_example.orders." + watermill.NewShortUUID()
	defer deleteStreamsNow(cfg.URL, topic)

	pub, err := nats.NewPublisher(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	msg := message.NewMessage("6f1c2a8e-0000-4000-8000-000000000001", []byte(`{"total":42}`))
	for range 2 { // the second is dropped by JetStream's duplicate window
		if err := pub.Publish(topic, msg); err != nil {
			log.Fatal(err)
		}
	}

	sub, err := nats.NewSubscriber(cfg, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	messages, err := sub.Subscribe(ctx, topic)
	if err != nil {
		log.Fatal(err)
	}
	got := <-messages
	id, _ := nats.MessageID()(got)
	fmt.Println("ID:", id)
	fmt.Println("payload:", string(got.Payload))
	fmt.Println("delivery:", got.Metadata.Get(nats.NumDeliveredKey))
	got.Ack()

	stream, _ := nats.StreamName(topic)
	nc, err := natsgo.Connect(cfg.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, _ := js.Stream(ctx, stream)
	info, _ := st.Info(ctx)
	fmt.Println("stored:", info.State.Msgs)
	// Output:
	// ID: 6f1c2a8e-0000-4000-8000-000000000001
	// payload: {"total":42}
	// delivery: 1
	// stored: 1
}

// A foreign producer's Nats-Msg-Id is the event ID.
func ExampleMessageID() {
	m := message.NewMessage("", nil)
	m.Metadata.Set(nats.MsgIDKey, "order-1")
	id, _ := nats.MessageID()(m)
	fmt.Println(id)
	// Output: order-1
}

func ExampleStreamName() {
	for _, topic := range []string{"orders", "orders.dlq.billing", "orders.*"} {
		name, err := nats.StreamName(topic)
		fmt.Println(name, err)
	}
	// Output:
	// orders <nil>
	// orders_2Edlq_2Ebilling <nil>
	//  nats: topic cannot be mapped to a JetStream subject and stream: topic "orders.*" contains a wildcard ('*' or '>')
}

func ExampleParseURL() {
	_, err := nats.ParseURL("nats://s3cretToken@nats.internal:4222/path")
	fmt.Println(err)
	// Output:
	// nats: invalid URL "nats://xxxxx@nats.internal:4222/path": paths, query parameters and fragments are not supported
}
