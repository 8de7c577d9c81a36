// Command debezium consumes the events of Debezium's outbox event router
// with idempo's stack, deduplicated by the event id the router puts in the
// record header "id" (dedup.Metadata("id")).
//
// The router's records, as its documentation describes them for the
// default configuration (JsonConverter, table.expand.json.payload off):
//
//	topic    outbox.event.<aggregatetype>           (route.topic.replacement)
//	key      "<aggregateid>"                        (a JSON string)
//	header   id=<the outbox row's id, a UUID>       (table.field.event.id)
//	header   type=<the row's type>                  (only with table.fields.additional.placement=type:header:type)
//	value    the payload column as a JSON string: "{\"id\": 1, …}"
//
// No Kafka Connect runs here: the program starts an embedded Kafka-protocol
// cluster and produces records in that format with kcat (librdkafka's
// command-line client, which must be on PATH), one of them twice, as a
// connector restarted before it committed its offsets emits it again, and
// one without the id header. The consumer applies each event once, skips
// the duplicate and dead-letters the record without an id. It exits 0 once
// every record has been settled.
//
// Against a real connector, point kafka.ParseURL at the cluster and
// subscribe to the router's topic; nothing else changes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

// topic is where the router sends the events of aggregate type "order"
// with its default route.topic.replacement, outbox.event.${routedByValue}.
const topic = "outbox.event.order"

// record is one message as the outbox event router emits it.
type record struct {
	// ID is the outbox row's id: the router's "id" header ("" for none).
	ID string
	// AggregateID is the record key (the aggregateid column).
	AggregateID string
	// Type is the type column, placed in a header named "type".
	Type string
	// Payload is the payload column.
	Payload string
}

// records are the outbox rows of two orders, in commit order. The first
// is emitted twice (see main); the last has no id header.
var records = []record{
	{ID: "4d47e190-0402-4048-bc2c-89dd54343cdc", AggregateID: "1", Type: "OrderCreated", Payload: `{"id": 1, "customerId": 123, "totalPrice": 39.98}`},
	{ID: "9f4c1f3a-6a1e-4d3b-8f1c-2b6f0e7d5a10", AggregateID: "2", Type: "OrderCreated", Payload: `{"id": 2, "customerId": 456, "totalPrice": 29.99}`},
	{ID: "0b1e5c2d-3f4a-4b5c-9d6e-7f8091a2b3c4", AggregateID: "1", Type: "OrderShipped", Payload: `{"id": 1, "carrier": "DHL"}`},
	{ID: "4d47e190-0402-4048-bc2c-89dd54343cdc", AggregateID: "1", Type: "OrderCreated", Payload: `{"id": 1, "customerId": 123, "totalPrice": 39.98}`},
	{ID: "", AggregateID: "3", Type: "OrderCreated", Payload: `{"id": 3}`},
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := run(ctx, os.Stdout); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// ErrNoKcat is returned by run when kcat is not on PATH.
var ErrNoKcat = errors.New("kcat is not on PATH: the records are produced with it (apt-get install kcat)")

// run starts the cluster, produces the records with kcat, consumes them
// and returns how often each event's effect was applied, by event id.
func run(ctx context.Context, out io.Writer) (map[string]int, error) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		return nil, ErrNoKcat
	}
	cluster, err := embedded.Start(embedded.Config{}) //nolint:contextcheck // the cluster lives until Close, not as long as ctx
	if err != nil {
		return nil, err
	}
	defer cluster.Close()
	fmt.Fprintln(out, "embedded cluster at", cluster.URL())
	for _, r := range records {
		if err := produce(ctx, kcat, cluster.Addrs()[0], r); err != nil {
			return nil, err
		}
	}
	return consume(ctx, cluster.Config("shipping"), len(records), out)
}

// produce writes one record in the router's format with kcat. The key is
// JSON-encoded, as the JsonConverter writes the aggregateid string; so is
// the value.
func produce(ctx context.Context, kcat, addr string, r record) error {
	key, _ := json.Marshal(r.AggregateID) // cannot fail: a string
	value, _ := json.Marshal(r.Payload)   // likewise
	args := []string{"-P", "-b", addr, "-t", topic, "-k", string(key), "-H", "type=" + r.Type}
	if r.ID != "" {
		args = append(args, "-H", "id="+r.ID)
	}
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(string(value) + "\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kcat %s: %w: %s", strings.Join(args, " "), err, b)
	}
	return nil
}

// consume runs a router handler wrapped by idempo's stack, keyed by the
// "id" header, until want records are settled (applied, skipped as
// duplicates or dead-lettered).
func consume(ctx context.Context, cfg kafka.Config, want int, out io.Writer) (map[string]int, error) {
	pub, err := kafka.NewPublisher(cfg, nil)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	sub, err := kafka.NewSubscriber(cfg, nil)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}

	var mu sync.Mutex // the handler and the observer print from the router's goroutines
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", a...)
	}
	stack, err := middleware.New(middleware.Config{
		// One process here; a service uses redisstore or sqlstore, whose
		// records outlive it and are shared by its replicas.
		Store:   memstore.New(nil),
		EventID: dedup.Metadata("id"),
		DLQ: dlq.Config{Publisher: pub, OnDeadLettered: func(_ context.Context, _ *message.Message, info dlq.Info) {
			say("dead-lettered a record of %s: %s", info.OriginalTopic, info.Failure.Reason)
		}},
		Observer: middleware.ObserverFunc(func(_ context.Context, e middleware.Event) {
			if e.Kind == middleware.KindOutcome && e.Outcome == middleware.OutcomeDuplicate {
				say("skipped duplicate of event %s", e.EventID)
			}
		}),
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()

	effects := map[string]int{}
	router.AddConsumerHandler("ship-order", topic, sub, func(msg *message.Message) error {
		payload, err := DecodePayload(msg.Payload)
		if err != nil {
			return err
		}
		var order struct {
			ID int `json:"id"`
		}
		if err := json.Unmarshal(payload, &order); err != nil {
			return fmt.Errorf("payload of event %s: %w", msg.Metadata.Get("id"), err)
		}
		mu.Lock()
		effects[msg.Metadata.Get("id")]++
		mu.Unlock()
		say("order %d (key %s): %s, event %s", order.ID, msg.Metadata.Get("idempo_original_key"),
			msg.Metadata.Get("type"), msg.Metadata.Get("id"))
		return nil
	}).AddMiddleware(stack.Middleware)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(rctx) }()
	defer func() { _ = router.Close() }()

	settled := func() int64 { st := stack.Stats(); return st.Processed + st.Duplicates + st.DeadLettered }
	for settled() < int64(want) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("settled %d of %d records: %w", settled(), want, ctx.Err())
		case err := <-runErr:
			return nil, fmt.Errorf("router stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := router.Close(); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	st := stack.Stats()
	fmt.Fprintf(out, "%d records: %d events applied, %d duplicate skipped, %d dead-lettered\n",
		want, st.Processed, st.Duplicates, st.DeadLettered)
	return effects, nil
}

// DecodePayload returns the event's JSON from a record value of the
// outbox event router: with table.expand.json.payload off (the default)
// the value is the payload column as a JSON string, which it unquotes;
// with it on the value is the JSON itself, returned as it is. A value
// that is not JSON is refused.
func DecodePayload(value []byte) (json.RawMessage, error) {
	if !json.Valid(value) {
		return nil, fmt.Errorf("record value is not JSON (%d bytes)", len(value))
	}
	trimmed := strings.TrimSpace(string(value))
	if !strings.HasPrefix(trimmed, `"`) {
		return json.RawMessage(trimmed), nil
	}
	var s string
	if err := json.Unmarshal([]byte(trimmed), &s); err != nil {
		return nil, fmt.Errorf("record value: %w", err)
	}
	if !json.Valid([]byte(s)) {
		return nil, fmt.Errorf("record value is a string that does not hold JSON (%d bytes)", len(s))
	}
	return json.RawMessage(s), nil
}
