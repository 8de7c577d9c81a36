package redisstream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/brokertest"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// runRouter runs a router until the test ends.
func runRouter(t *testing.T, r *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = r.Run(ctx); close(stopped) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Error("the router did not stop within 30s")
		}
	})
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("the router did not start within 10s")
	}
}

// waitAcked waits until group has delivered and acknowledged every entry
// of stream.
func waitAcked(t *testing.T, c *redis.Client, stream, group string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		gs, err := c.XInfoGroups(context.Background(), stream).Result()
		if err != nil {
			return false
		}
		for _, g := range gs {
			if g.Name == group {
				return g.Pending == 0 && g.Lag == 0
			}
		}
		return false
	}, within, 20*time.Millisecond, "group %q did not acknowledge every entry of %q within %v", group, stream, within)
}

// TestLiveHandlerNotClaimed: a handler slower than ClaimIdle, under an
// idempo stack whose lease keeper touches the entry, is not handed to the
// other consumer of the group while it runs.
func TestLiveHandlerNotClaimed(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	stream := uniqueStream("slow")
	deleteStreams(t, cfg.URL, stream, dlq.DefaultTopic(stream, "h0"), dlq.DefaultTopic(stream, "h1"), dlq.DefaultTopic(stream, "foreign"))
	cfg.Lease = time.Second
	cfg.ClaimIdle = 1500 * time.Millisecond
	cfg.ClaimInterval = 100 * time.Millisecond
	cfg.NackDelay = 100 * time.Millisecond
	cfg.Block = 100 * time.Millisecond

	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil), Lease: cfg.Lease, Logger: slog.New(slog.DiscardHandler),
		DLQ:   dlq.Config{Publisher: newPublisher(t, cfg)},
		Retry: retry.Policy{MaxAttempts: 1},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })

	var deliveries, runs atomic.Int32
	count := func(h message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			deliveries.Add(1)
			return h(m)
		}
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	for i := range 2 {
		router.AddConsumerHandler(fmt.Sprint("h", i), stream, newSubscriber(t, cfg), func(*message.Message) error {
			runs.Add(1)
			time.Sleep(4 * cfg.ClaimIdle) // far past ClaimIdle
			return nil
		}).AddMiddleware(count, stack.Middleware)
	}
	runRouter(t, router)
	require.NoError(t, newPublisher(t, cfg).Publish(stream, message.NewMessage(watermill.NewUUID(), []byte("slow"))))
	waitAcked(t, rawClient(t, cfg.URL), stream, redisstream.DefaultConsumerGroup, 30*time.Second)
	require.EqualValues(t, 1, runs.Load(), "the handler ran more than once")
	require.EqualValues(t, 1, deliveries.Load(),
		"the entry was handed to another consumer while its handler ran (the Touch did not reset its idle time)")
}

// TestNackPacing: a nacked entry comes back after NackDelay, claimed again
// so its delivery count grows, and stays pending until acked.
func TestNackPacing(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	stream := uniqueStream("nack")
	deleteStreams(t, cfg.URL, stream)
	cfg.NackDelay = 500 * time.Millisecond
	cfg.Block = 100 * time.Millisecond
	c := rawClient(t, cfg.URL)
	sub := newSubscriber(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, stream)
	require.NoError(t, err)
	require.NoError(t, newPublisher(t, cfg).Publish(stream, message.NewMessage("u1", []byte("x"))))

	first := receive(t, msgs)
	require.Equal(t, "1", first.Metadata.Get(redisstream.DeliveryCountKey))
	nackedAt := time.Now()
	first.Nack()
	// Still pending while the nack waits.
	p, err := c.XPending(ctx, stream, redisstream.DefaultConsumerGroup).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, p.Count, "a nacked entry must stay pending")

	second := receive(t, msgs)
	require.GreaterOrEqual(t, time.Since(nackedAt), cfg.NackDelay, "the nacked entry came back before NackDelay")
	require.Equal(t, "u1", second.UUID)
	require.Equal(t, "2", second.Metadata.Get(redisstream.DeliveryCountKey))
	require.Equal(t, first.Metadata.Get(redisstream.EntryIDKey), second.Metadata.Get(redisstream.EntryIDKey))
	second.Ack()
	waitAcked(t, c, stream, redisstream.DefaultConsumerGroup, 10*time.Second)
}

func receive(t *testing.T, msgs <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-msgs:
		require.True(t, ok, "the subscription closed")
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no message within 15s")
		return nil
	}
}

// TestClockCheck: NewSubscriber refuses a ClaimIdle not longer than
// Lease + NackDelay, naming every figure.
func TestClockCheck(t *testing.T) {
	t.Parallel()
	cfg := redisstream.Config{URL: "redis-stream://127.0.0.1:6379/0", Lease: 30 * time.Second, ClaimIdle: 20 * time.Second}
	_, err := redisstream.NewSubscriber(cfg, nil)
	require.ErrorIs(t, err, redisstream.ErrInvalidConfig)
	for _, s := range []string{"ClaimIdle (20s)", "Lease (30s)", "NackDelay (1s)", "31s"} {
		require.Contains(t, err.Error(), s)
	}
	cfg.ClaimIdle = 31 * time.Second
	_, err = redisstream.NewSubscriber(cfg, nil)
	require.ErrorIs(t, err, redisstream.ErrInvalidConfig, "ClaimIdle equal to Lease + NackDelay must be refused")
	cfg.ClaimIdle = 0 // 2 × Lease
	s, err := redisstream.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

// TestForeignProducers: entries of producers that are not Watermill (a
// bare go-redis XADD, redis-cli XADD), with an id field and no UUID, each
// sent twice, are processed once per ID through a stack.
func TestForeignProducers(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	stream := uniqueStream("foreign")
	deleteStreams(t, cfg.URL, stream, dlq.DefaultTopic(stream, "h0"), dlq.DefaultTopic(stream, "h1"), dlq.DefaultTopic(stream, "foreign"))
	cfg.Block = 100 * time.Millisecond
	c := rawClient(t, cfg.URL)
	ctx := context.Background()
	ids := []string{"go-1", "go-2"}
	for range 2 {
		for _, id := range ids[:2] {
			require.NoError(t, c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"id": id, "payload": "p-" + id}}).Err())
		}
	}
	if cli, err := exec.LookPath("redis-cli"); err == nil {
		ids = append(ids, "cli-1")
		opts, err := redis.ParseURL("redis" + cfg.URL[len("redis-stream"):])
		require.NoError(t, err)
		host, port, _ := strings.Cut(opts.Addr, ":")
		for range 2 {
			out, err := exec.Command(cli, "-h", host, "-p", port, "-n", fmt.Sprint(opts.DB),
				"XADD", stream, "*", "id", "cli-1", "payload", "p-cli-1", "type", "order").CombinedOutput()
			require.NoError(t, err, "redis-cli: %s", out)
		}
	} else {
		t.Log("redis-cli is not on PATH: its subtest is skipped")
	}

	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil), EventID: redisstream.MessageID(), Logger: slog.New(slog.DiscardHandler),
		DLQ: dlq.Config{Publisher: newPublisher(t, cfg)},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })
	var mu sync.Mutex
	got := map[string]int{}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler("foreign", stream, newSubscriber(t, cfg), func(m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[m.Metadata.Get(redisstream.MessageIDKey)]++
		if "p-"+m.Metadata.Get(redisstream.MessageIDKey) != string(m.Payload) {
			return fmt.Errorf("payload %q", m.Payload)
		}
		return nil
	}).AddMiddleware(stack.Middleware)
	runRouter(t, router)
	waitAcked(t, c, stream, redisstream.DefaultConsumerGroup, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		require.Equal(t, 1, got[id], "event %q", id)
	}
	require.Len(t, got, len(ids))
	require.EqualValues(t, len(ids), stack.Stats().Processed)
}

// TestOddEntriesNeverFail: entries with a broken metadata field, odd field
// names, no UUID or a huge value still become messages; the broken one is
// marked malformed.
func TestOddEntriesNeverFail(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	stream := uniqueStream("odd")
	deleteStreams(t, cfg.URL, stream)
	cfg.Block = 100 * time.Millisecond
	c := rawClient(t, cfg.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	huge := strings.Repeat("h", 4<<20)
	entries := []map[string]any{
		{"metadata": "\xc1not msgpack", "payload": "a"},
		{"": "empty name", "\x00\xff": "binary name"},
		{"payload": huge, "big": huge},
	}
	for _, v := range entries {
		require.NoError(t, c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: v}).Err())
	}
	sub := newSubscriber(t, cfg)
	msgs, err := sub.Subscribe(ctx, stream)
	require.NoError(t, err)
	m := receive(t, msgs)
	require.Contains(t, m.Metadata.Get(dlqmeta.KeyMalformed), "metadata")
	m.Ack()
	m = receive(t, msgs)
	require.Equal(t, "binary name", m.Metadata.Get("\x00\xff"))
	require.Empty(t, m.Metadata.Get(dlqmeta.KeyMalformed))
	m.Ack()
	m = receive(t, msgs)
	require.Len(t, m.Payload, len(huge))
	require.Len(t, m.Metadata.Get("big"), len(huge))
	m.Ack()
	waitAcked(t, c, stream, redisstream.DefaultConsumerGroup, 10*time.Second)
}

// TestDeadConsumerClaimed: entries a consumer read and never settled (it
// died) are claimed by another consumer after ClaimIdle, with their
// delivery count.
func TestDeadConsumerClaimed(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	stream := uniqueStream("dead")
	deleteStreams(t, cfg.URL, stream)
	cfg.Lease = time.Second
	cfg.ClaimIdle = 1500 * time.Millisecond
	cfg.ClaimInterval = 100 * time.Millisecond
	cfg.NackDelay = 100 * time.Millisecond
	cfg.Block = 100 * time.Millisecond
	c := rawClient(t, cfg.URL)
	ctx := context.Background()
	require.NoError(t, newPublisher(t, cfg).Publish(stream, message.NewMessage("a", nil), message.NewMessage("b", nil)))
	// A consumer that reads both and dies.
	require.NoError(t, c.XGroupCreateMkStream(ctx, stream, redisstream.DefaultConsumerGroup, "0").Err())
	require.NoError(t, c.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: redisstream.DefaultConsumerGroup, Consumer: "dead", Streams: []string{stream, ">"}, Count: 2,
	}).Err())
	readAt := time.Now()
	sub := newSubscriber(t, cfg)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := sub.Subscribe(sctx, stream)
	require.NoError(t, err)
	for _, want := range []string{"a", "b"} {
		m := receive(t, msgs)
		require.GreaterOrEqual(t, time.Since(readAt), cfg.ClaimIdle, "claimed before ClaimIdle")
		require.Equal(t, want, m.UUID)
		require.Equal(t, "2", m.Metadata.Get(redisstream.DeliveryCountKey))
		m.Ack()
	}
	waitAcked(t, c, stream, redisstream.DefaultConsumerGroup, 10*time.Second)
}

// TestTrimAcknowledged: trimming keeps every entry some group has not
// acknowledged.
func TestTrimAcknowledged(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	stream := uniqueStream("trim")
	deleteStreams(t, cfg.URL, stream)
	c := rawClient(t, cfg.URL)
	ctx := context.Background()
	pub := newPublisher(t, cfg)
	for i := range 5 {
		require.NoError(t, pub.Publish(stream, message.NewMessage(fmt.Sprint(i), nil)))
	}
	require.NoError(t, c.XGroupCreate(ctx, stream, "g1", "0").Err())
	require.NoError(t, c.XGroupCreate(ctx, stream, "g2", "0").Err())
	read := func(group string, n int64) []redis.XMessage {
		res, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{stream, ">"}, Count: n}).Result()
		require.NoError(t, err)
		return res[0].Messages
	}
	g1 := read("g1", 4) // acks 0, 1, 3; 2 stays pending
	require.NoError(t, c.XAck(ctx, stream, "g1", g1[0].ID, g1[1].ID, g1[3].ID).Err())
	g2 := read("g2", 5) // acks all
	for _, m := range g2 {
		require.NoError(t, c.XAck(ctx, stream, "g2", m.ID).Err())
	}
	sub := newSubscriber(t, cfg)
	n, err := sub.TrimAcknowledged(ctx, stream)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	left, err := c.XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, left, 3)
	require.Equal(t, g1[2].ID, left[0].ID, "the entry pending in g1 was trimmed")
	require.NoError(t, c.XAck(ctx, stream, "g1", g1[2].ID).Err())
	n, err = sub.TrimAcknowledged(ctx, stream)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "g1 has not read the last two entries: they stay (the last delivered one is kept)")
}

// TestDelayedRedeliveryEndToEnd runs the shared delayed-redelivery test.
func TestDelayedRedeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	cfg.Block = 100 * time.Millisecond
	topic := uniqueStream("orders")
	deleteStreams(t, cfg.URL, brokertest.RedeliveryTopics(topic)...)
	pub := newPublisher(t, cfg)
	brokertest.DelayedRedelivery(t, topic, pub, func() message.Subscriber {
		s, err := redisstream.NewSubscriber(cfg, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

var _ = errors.New
