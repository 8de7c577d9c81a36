package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/console"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution/memstore"
)

// memDLQ is a DLQ in memory: a publisher and a dlqops.Source. In
// production they are kafkadlq.Source or amqpdlq.Source and the broker
// preset's publisher.
type memDLQ struct {
	mu   sync.Mutex
	logs map[string][]*message.Message
}

func (b *memDLQ) Publish(topic string, msgs ...*message.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.logs[topic] = append(b.logs[topic], msgs...)
	return nil
}

func (b *memDLQ) Close() error { return nil }

func (b *memDLQ) Read(_ context.Context, topic string, fn func(dlqops.Entry) error) error {
	b.mu.Lock()
	msgs := append([]*message.Message(nil), b.logs[topic]...)
	b.mu.Unlock()
	for i, m := range msgs {
		if err := fn(dlqops.ParseEntry(topic, strconv.Itoa(i), m)); err != nil {
			return err
		}
	}
	return nil
}

// Serve the console over a DLQ with basic authentication. Mount it under
// a path of your own server with http.StripPrefix; keep its index current
// with Run (here one Refresh).
func Example() {
	bus := &memDLQ{logs: map[string][]*message.Message{}}
	dead, _ := dlq.New(dlq.Config{Publisher: bus})
	for _, id := range []string{"order-7", "order-8"} {
		_ = dead.Publish(context.Background(), message.NewMessage(id, []byte(`{"amount":-1}`)), dlq.Info{
			OriginalTopic: "orders", Handler: "billing", Scope: "billing", EventID: id,
			Failure: dlq.Failure{Reason: dlq.ReasonPermanent, Error: "negative amount for " + id},
		})
	}

	h, err := console.New(console.Config{
		DLQs: []string{"orders.dlq"}, Source: bus, Publisher: bus, Resolutions: memstore.New(nil),
		Auth: console.Auth{BasicUser: "alice", BasicPassword: "change me"},
	})
	if err != nil {
		panic(err)
	}
	if err := h.Refresh(context.Background()); err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dead-letters/", http.StripPrefix("/dead-letters", h))

	req := httptest.NewRequest(http.MethodGet, "/dead-letters/", nil)
	req.SetBasicAuth("alice", "change me")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	fmt.Println(rec.Code, strings.Contains(rec.Body.String(), "orders.dlq</a>: 2 unresolved"))
	fmt.Println(strings.Contains(rec.Body.String(), "negative amount for order-&lt;n&gt;"))
	// Output:
	// 200 true
	// true
}

// Keep the index in the Redis server of the resolution store
// (dlq/resolution/redisstore), across restarts and shared by consoles.
func ExampleNewRedisIndex() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	bus := &memDLQ{logs: map[string][]*message.Message{}}
	idx, err := console.NewRedisIndex(client, &console.RedisIndexOptions{Prefix: "example:console:"})
	if err != nil {
		panic(err)
	}
	h, err := console.New(console.Config{
		DLQs: []string{"orders.dlq"}, Source: bus, Publisher: bus, Resolutions: memstore.New(nil), Index: idx,
		Auth: console.Auth{BasicUser: "alice", BasicPassword: "change me"},
	})
	if err != nil {
		panic(err)
	}
	_ = h // serve it, and keep the index current with h.Run(ctx)
}
