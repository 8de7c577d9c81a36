package amqp_test

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

// watermill-amqp's durable-queue layout declares the queue only when a
// subscriber starts; the preset declares it before the first publish, so
// messages published before any subscriber exists are kept.
func TestPublishBeforeSubscribe(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	queue := uniqueQueue("early")
	deleteQueue(t, cfg.URL, queue)

	pub := newPublisher(t, cfg)
	var want []string
	for range 5 {
		m := message.NewMessage(watermill.NewUUID(), []byte("early"))
		want = append(want, m.UUID)
		require.NoError(t, pub.Publish(queue, m))
	}

	sub := newSubscriber(t, cfg)
	got := receive(t, subscribe(t, sub, queue), 5, 30*time.Second)
	var ids []string
	for _, m := range got {
		ids = append(ids, m.UUID)
		require.Equal(t, m.UUID, m.Metadata.Get(amqp.MessageIDKey))
	}
	require.Equal(t, want, ids, "one consumer keeps the queue's order")
}

// A nacked delivery is held for NackDelay, then requeued and redelivered
// with the redelivered flag.
func TestNackRequeuesAfterDelay(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	cfg.NackDelay = 50 * time.Millisecond
	queue := uniqueQueue("nack")
	deleteQueue(t, cfg.URL, queue)

	pub := newPublisher(t, cfg)
	m := message.NewMessage(watermill.NewUUID(), []byte("x"))
	require.NoError(t, pub.Publish(queue, m))

	ch := subscribe(t, newSubscriber(t, cfg), queue)
	select {
	case first := <-ch:
		require.Equal(t, m.UUID, first.UUID)
		require.False(t, first.Metadata.Get(wire.AMQPRedeliveredKey) == "true")
		first.Nack()
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}
	again := receive(t, ch, 1, 30*time.Second)
	require.Equal(t, m.UUID, again[0].UUID)
	require.Equal(t, "true", again[0].Metadata.Get(wire.AMQPRedeliveredKey))
}

// Consumers > 1 hands out several messages at once under one Subscribe.
func TestConsumersRunConcurrently(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	cfg.Consumers = 3
	cfg.Prefetch = 1
	queue := uniqueQueue("concurrent")
	deleteQueue(t, cfg.URL, queue)

	pub := newPublisher(t, cfg)
	for range 3 {
		require.NoError(t, pub.Publish(queue, message.NewMessage(watermill.NewUUID(), []byte("x"))))
	}
	ch := subscribe(t, newSubscriber(t, cfg), queue)
	var held []*message.Message
	for range 3 {
		select {
		case m := <-ch:
			held = append(held, m) // not acked yet
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d messages in flight at once", len(held))
		}
	}
	for _, m := range held {
		m.Ack()
	}
}

// amqp-publish (librabbitmq) sets CloudEvents headers; the idempo subscriber
// extracts the ID with dedup.CloudEventsID.
func TestAmqpPublishCloudEvents(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	queue := uniqueQueue("ce")
	deleteQueue(t, cfg.URL, queue)

	sub := newSubscriber(t, cfg)
	require.NoError(t, sub.SubscribeInitialize(queue))

	path, err := exec.LookPath("amqp-publish")
	require.NoError(t, err, "amqp-publish is required (apt-get install amqp-tools)")
	// librabbitmq reads a bare "/" path as the empty vhost: spell it out.
	uri, err := amqp091.ParseURI(cfg.URL)
	require.NoError(t, err)
	toolURL := fmt.Sprintf("amqp://%s:%s@%s:%d/%s", uri.Username, uri.Password, uri.Host, uri.Port, url.PathEscape(uri.Vhost))
	publish := func(body string, headers ...string) {
		args := []string{"--url", toolURL, "-r", queue, "-p", "-b", body}
		for _, h := range headers {
			args = append(args, "-H", h)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
		require.NoError(t, err, "amqp-publish %v: %s", args, out)
	}
	publish("one", "cloudEvents_id: evt-1", "cloudEvents_type: order.created")
	// amqp-publish splits -H at the first ':', so it cannot send the
	// binding's "cloudEvents:id" spelling; the "cloudEvents_id" one exists
	// for such clients. (The ':' spelling is covered by the amqp091 test.)
	publish("two", "cloudEvents_id: evt-2")
	publish("two", "cloudEvents_id: evt-2") // a duplicate
	publish("three", "cloudEvents:id: evt-3")

	got := receive(t, subscribe(t, sub, queue), 4, 30*time.Second)
	require.Equal(t, "id: evt-3", got[3].Metadata.Get("cloudEvents"), "how amqp-publish sends a ':' header")
	got = got[:3]
	extract := dedup.CloudEventsID()
	var ids []string
	for _, m := range got {
		id, err := extract(m)
		require.NoError(t, err, "metadata: %v", m.Metadata)
		ids = append(ids, id)
		require.Empty(t, m.Metadata.Get(dlqmeta.KeyMalformed))
	}
	require.Equal(t, []string{"evt-1", "evt-2", "evt-2"}, ids)
	require.Equal(t, "order.created", got[0].Metadata.Get("cloudEvents_type"))
	require.Equal(t, "one", string(got[0].Payload))
}

// A producer that is not Watermill (plain amqp091-go) sets the message-id
// property and an x-death style table header: the delivery is consumed once,
// with the ID extractable and the table as JSON — no redelivery loop.
func TestForeignProducerMessageIDAndTables(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	queue := uniqueQueue("foreign")
	deleteQueue(t, cfg.URL, queue)

	sub := newSubscriber(t, cfg)
	require.NoError(t, sub.SubscribeInitialize(queue))

	conn, err := amqp091.Dial(cfg.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	require.NoError(t, ch.Confirm(false))
	now := time.Now().UTC().Truncate(time.Second)
	for i, id := range []string{"order-1", "order-1", "order-2"} {
		dc, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), "", queue, false, false, amqp091.Publishing{
			MessageId:    id,
			DeliveryMode: amqp091.Persistent,
			Body:         []byte{byte('a' + i)},
			Headers: amqp091.Table{
				"x-death": []any{amqp091.Table{
					"count": int64(1), "reason": "rejected", "queue": "upstream",
					"time": now, "exchange": "", "routing-keys": []any{"upstream"},
				}},
				"attempt":        int32(i),
				"cloudEvents:id": "ce-" + id,
			},
		})
		require.NoError(t, err)
		ok, err := dc.WaitContext(t.Context())
		require.NoError(t, err)
		require.True(t, ok)
	}

	out := subscribe(t, sub, queue)
	got := receive(t, out, 3, 30*time.Second)
	extract := amqp.MessageID()
	var ids []string
	for i, m := range got {
		id, err := extract(m)
		require.NoError(t, err)
		ids = append(ids, id)
		require.Empty(t, m.UUID, "no Watermill UUID header")
		require.Empty(t, m.Metadata.Get(dlqmeta.KeyMalformed))
		require.True(t, strings.HasPrefix(m.Metadata.Get("x-death"), `[{`), m.Metadata.Get("x-death"))
		require.Contains(t, m.Metadata.Get("x-death"), `"reason":"rejected"`)
		require.Equal(t, string(rune('0'+i)), m.Metadata.Get("attempt"))
		ceID, err := dedup.CloudEventsID()(m)
		require.NoError(t, err)
		require.Equal(t, "ce-"+id, ceID)
		require.NotEqual(t, "true", m.Metadata.Get(wire.AMQPRedeliveredKey), "delivered once, not looped")
	}
	require.Equal(t, []string{"order-1", "order-1", "order-2"}, ids)

	select {
	case m := <-out:
		t.Fatalf("unexpected redelivery of %q", m.Metadata.Get(amqp.MessageIDKey))
	case <-time.After(200 * time.Millisecond):
	}
}

// Closing a subscriber and opening a new one on the same queue loses nothing:
// deliveries in flight at Close are requeued.
func TestConsumerRestart(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	queue := uniqueQueue("restart")
	deleteQueue(t, cfg.URL, queue)

	pub := newPublisher(t, cfg)
	const n = 40
	published := map[string]bool{}
	for range n {
		m := message.NewMessage(watermill.NewUUID(), []byte("x"))
		published[m.UUID] = true
		require.NoError(t, pub.Publish(queue, m))
	}

	sub1, err := amqp.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	ch1, err := sub1.Subscribe(t.Context(), queue)
	require.NoError(t, err)
	acked := map[string]bool{}
	for _, m := range receive(t, ch1, n/2, 30*time.Second) {
		acked[m.UUID] = true
	}
	// Take one more without acking it: Close must requeue it.
	select {
	case <-ch1:
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}
	require.NoError(t, sub1.Close())

	ch2 := subscribe(t, newSubscriber(t, cfg), queue)
	rest := receive(t, ch2, n-len(acked), 30*time.Second)
	for _, m := range rest {
		require.False(t, acked[m.UUID], "an acked message came back")
		acked[m.UUID] = true
	}
	require.Equal(t, published, acked)
}

// A message RabbitMQ itself dead-letters (rejected from a queue with a
// dead-letter exchange) carries a real x-death table; the idempo subscriber
// on the dead-letter queue consumes it once, with the table as JSON.
func TestBrokerDeadLetteredDelivery(t *testing.T) {
	t.Parallel()
	cfg := requireBroker(t)
	source := uniqueQueue("dlx_source")
	target := uniqueQueue("dlx_target")
	deleteQueue(t, cfg.URL, source)
	deleteQueue(t, cfg.URL, target)

	sub := newSubscriber(t, cfg)
	require.NoError(t, sub.SubscribeInitialize(target))

	conn, err := amqp091.Dial(cfg.URL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	// The source queue's publisher declares it with the dead-letter
	// arguments; every client of a queue must use the same ones.
	sourceCfg := cfg
	sourceCfg.QueueArguments = map[string]any{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": target,
	}
	pub := newPublisher(t, sourceCfg)
	m := message.NewMessage(watermill.NewUUID(), []byte("rejected"))
	m.Metadata.Set("cloudEvents:id", "evt-dlx")
	require.NoError(t, pub.Publish(source, m))

	deliveries, err := ch.Consume(source, "", false, false, false, false, nil)
	require.NoError(t, err)
	select {
	case d := <-deliveries:
		require.NoError(t, d.Reject(false))
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}

	out := subscribe(t, sub, target)
	got := receive(t, out, 1, 30*time.Second)[0]
	require.Equal(t, m.UUID, got.UUID)
	require.Empty(t, got.Metadata.Get(dlqmeta.KeyMalformed))
	require.Contains(t, got.Metadata.Get("x-death"), `"reason":"rejected"`)
	require.Contains(t, got.Metadata.Get("x-death"), source)
	id, err := dedup.CloudEventsID()(got)
	require.NoError(t, err)
	require.Equal(t, "evt-dlx", id)
	select {
	case again := <-out:
		t.Fatalf("unexpected redelivery: %v", again.Metadata)
	case <-time.After(200 * time.Millisecond):
	}
}
