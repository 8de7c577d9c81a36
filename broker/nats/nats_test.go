package nats_test

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Publishing the same UUID twice (a publisher retry after a lost ack)
// stores one message: the Nats-Msg-Id is the UUID and JetStream's duplicate
// window drops the copy.
func TestDuplicateWindowDropsPublisherRetry(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	topic := uniqueTopic("dup")
	deleteStreams(t, cfg.URL, topic)
	pub := newPublisher(t, cfg)
	m := message.NewMessage(watermill.NewUUID(), []byte("once"))
	require.NoError(t, pub.Publish(topic, m))
	require.NoError(t, pub.Publish(topic, m.Copy()))
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("other"))))

	_, js := jsClient(t, cfg.URL)
	name, err := nats.StreamName(topic)
	require.NoError(t, err)
	st, err := js.Stream(t.Context(), name)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Msgs, "the retry was stored")
	require.Equal(t, nats.DefaultDuplicateWindow, info.Config.Duplicates)

	ch := subscribe(t, newSubscriber(t, cfg), topic)
	got := receive(t, ch, 2, 30*time.Second)
	require.Equal(t, m.UUID, got[0].UUID)
	require.Equal(t, "once", string(got[0].Payload))
	require.Empty(t, got[0].Metadata.Get(nats.MsgIDKey), "a Watermill message's ID is its UUID")
	require.Equal(t, "1", got[0].Metadata.Get(nats.NumDeliveredKey))
	require.Equal(t, "1", got[0].Metadata.Get(nats.StreamSeqKey))
	nothingMore(t, ch, 300*time.Millisecond)
}

// Topics with '.' (a DLQ topic), long and odd names are mapped to a stream
// and a subject on the real server; unmappable ones are refused clearly.
func TestOddTopicsOnTheServer(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	id := watermill.NewShortUUID()
	topics := []string{
		"orders.dlq.handler." + id,
		"idempo_test.Grüße/ü:x-" + id,
		"idempo_test." + id + "." + strings.Repeat("long-name", 20)[:200-len(id)-13],
		"idempo_test.a_b." + id,
		"idempo_test.a.b." + id, // must not share a stream with a_b
	}
	deleteStreams(t, cfg.URL, topics...)
	pub := newPublisher(t, cfg)
	sub := newSubscriber(t, cfg)
	for _, topic := range topics {
		require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(topic))), topic)
	}
	for _, topic := range topics {
		got := receive(t, subscribe(t, sub, topic), 1, 30*time.Second)
		require.Equal(t, topic, string(got[0].Payload), "each topic has its own stream and subject")
	}
	for _, bad := range []string{"orders.*", "with space", strings.Repeat("x", 201), "a..b", "$JS.x"} {
		err := pub.Publish(bad, message.NewMessage(watermill.NewUUID(), nil))
		require.ErrorIs(t, err, nats.ErrTopic, bad)
		_, err = sub.Subscribe(t.Context(), bad)
		require.ErrorIs(t, err, nats.ErrTopic, bad)
	}
}

// A nacked message is held back by JetStream for NackDelay (a delayed
// negative ack), then redelivered with the delivery count raised.
func TestNackComesBackAfterDelay(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	cfg.NackDelay = 2 * time.Second
	topic := uniqueTopic("nack")
	deleteStreams(t, cfg.URL, topic)
	pub := newPublisher(t, cfg)
	m := message.NewMessage(watermill.NewUUID(), []byte("x"))
	require.NoError(t, pub.Publish(topic, m))

	ch := subscribe(t, newSubscriber(t, cfg), topic)
	select {
	case first := <-ch:
		require.Equal(t, "1", first.Metadata.Get(nats.NumDeliveredKey))
		first.Nack()
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}
	// Not back at once: an immediate nak would be redelivered in
	// milliseconds.
	nothingMore(t, ch, 700*time.Millisecond)
	again := receive(t, ch, 1, 30*time.Second)
	require.Equal(t, m.UUID, again[0].UUID)
	require.Equal(t, "1", again[0].Metadata.Get(nats.StreamSeqKey))
	// Usually "2"; nats-server 2.9 takes back the count of a delivery it
	// made to a pull request that had just expired, so only its form is
	// checked.
	n, err := strconv.Atoi(again[0].Metadata.Get(nats.NumDeliveredKey))
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 1)
}

// Config and the start-up check: NewSubscriber refuses clocks that disagree.
func TestNewSubscriberChecksClocks(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	cfg.AckWait = 5 * time.Second
	_, err := nats.NewSubscriber(cfg, nil)
	require.ErrorIs(t, err, nats.ErrInvalidConfig)
	require.ErrorContains(t, err, "AckWait (5s) is shorter than Lease (30s)")
	cfg.AckWait, cfg.MaxDeliver = 0, 5
	_, err = nats.NewSubscriber(cfg, nil)
	require.ErrorContains(t, err, "MaxDeliver (5) is not above the stack's delivery cap MaxDeliveries (10)")
}

// stackRouter runs handler under an idempo stack on topic with subscribers
// from newSub (one handler per subscriber), and returns the stack.
func stackRouter(t *testing.T, topic string, pub message.Publisher, subs []message.Subscriber, lease time.Duration, handler message.NoPublishHandlerFunc) *middleware.Stack {
	t.Helper()
	stack, err := middleware.New(middleware.Config{
		Store: memstore.New(nil), DLQ: dlq.Config{Publisher: pub}, Logger: slog.New(slog.DiscardHandler),
		EventID: nats.MessageID(), Lease: lease,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	for i, s := range subs {
		router.AddConsumerHandler("h"+string(rune('a'+i)), topic, s, handler).AddMiddleware(stack.Middleware)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = router.Run(ctx); close(stopped) }()
	t.Cleanup(func() {
		cancel()
		_ = router.Close()
		select {
		case <-stopped:
		case <-time.After(time.Minute):
			t.Error("the router did not stop within a minute")
		}
	})
	select {
	case <-router.Running():
	case <-time.After(time.Minute):
		t.Fatal("the router did not start within a minute")
	}
	return stack
}

// A handler slower than AckWait, under an idempo stack, is not redelivered
// to the other consumer while it runs: the lease keeper's Touch sends
// JetStream an in-progress ack after each extension. Without the Touch,
// JetStream redelivers after AckWait and the delivery count rises.
func TestSlowHandlerIsNotRedelivered(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	cfg.Lease, cfg.AckWait = time.Second, time.Second
	topic := uniqueTopic("slow")
	deleteStreams(t, cfg.URL, topic)
	pub := newPublisher(t, cfg)
	var deliveries, runs atomic.Int32
	subs := []message.Subscriber{countingSubscriber{newSubscriber(t, cfg), &deliveries}, countingSubscriber{newSubscriber(t, cfg), &deliveries}}
	stack := stackRouter(t, topic, pub, subs, cfg.Lease, func(*message.Message) error {
		runs.Add(1)
		time.Sleep(5 * time.Second) // five AckWaits
		return nil
	})
	require.NoError(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("slow"))))
	require.Eventually(t, func() bool { return stack.Stats().Processed == 1 }, time.Minute, 20*time.Millisecond, "not processed")
	nothing := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(nothing) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, int32(1), deliveries.Load(), "JetStream redelivered a message whose handler was running")
	require.Equal(t, int32(1), runs.Load())
}

type countingSubscriber struct {
	message.Subscriber
	n *atomic.Int32
}

func (s countingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			s.n.Add(1)
			out <- m
		}
	}()
	return out, nil
}

// Producers that are not Watermill (a bare nats.go client, and the nats CLI
// when it is installed) publish with a Nats-Msg-Id header and no Watermill
// UUID: JetStream drops a repeat within its window, and the stack
// deduplicates a repeat after it; each ID is processed once.
func TestForeignProducersProcessedOncePerID(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	cfg.DuplicateWindow = time.Second
	topic := uniqueTopic("foreign")
	deleteStreams(t, cfg.URL, topic)
	pub := newPublisher(t, cfg)
	require.NoError(t, pub.EnsureStream(t.Context(), topic))

	var mu sync.Mutex
	seen := map[string]int{}
	stack := stackRouter(t, topic, pub, []message.Subscriber{newSubscriber(t, cfg)}, 0, func(m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.UUID != "" || m.Metadata.Get(dlqmeta.KeyMalformed) != "" {
			return errors.New("unexpected UUID or malformed message")
		}
		seen[m.Metadata.Get(nats.MsgIDKey)+"="+string(m.Payload)]++
		return nil
	})

	_, js := jsClient(t, cfg.URL)
	send := func(id, body string) bool {
		ack, err := js.PublishMsg(t.Context(), &natsgo.Msg{Subject: topic, Data: []byte(body), Header: natsgo.Header{"Nats-Msg-Id": {id}, "Content-Type": {"text/plain"}}})
		require.NoError(t, err)
		return ack.Duplicate
	}
	require.False(t, send("order-1", "a"))
	require.True(t, send("order-1", "a"), "JetStream's window drops the repeat")
	require.False(t, send("order-2", "b"))
	want := map[string]int{"order-1=a": 1, "order-2=b": 1}
	cli, err := exec.LookPath(filepath.Join(homeDir(), "go", "bin", "nats"))
	if err != nil {
		cli, err = exec.LookPath("nats")
	}
	t.Run("nats CLI", func(t *testing.T) {
		if err != nil {
			t.Skip("the nats CLI is not installed (go install github.com/nats-io/natscli/nats@latest)")
		}
		for range 2 {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			out, err := exec.CommandContext(ctx, cli, "--server", cfg.URL, "pub", "-J", topic, "c", "-H", "Nats-Msg-Id:cli-1").CombinedOutput()
			cancel()
			require.NoError(t, err, "%s", out)
		}
		mu.Lock()
		want["cli-1=c"] = 1
		mu.Unlock()
	})
	// After the window JetStream stores a repeat; the stack drops it.
	time.Sleep(1500 * time.Millisecond)
	require.False(t, send("order-1", "a"))
	require.Eventually(t, func() bool { return stack.Stats().Duplicates >= 1 }, time.Minute, 20*time.Millisecond, "the repeat was not deduplicated")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == len(want)
	}, time.Minute, 20*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, want, seen)
}

func homeDir() string {
	h, _ := exec.Command("sh", "-c", "echo $HOME").Output()
	return strings.TrimSpace(string(h))
}

// Odd headers and huge values from a foreign producer never fail the
// unmarshaler: every message arrives; the unfaithful ones are marked
// malformed. Odd metadata published by the preset comes back as it was.
func TestOddHeadersNeverFail(t *testing.T) {
	t.Parallel()
	cfg := requireServer(t)
	topic := uniqueTopic("odd")
	deleteStreams(t, cfg.URL, topic)
	pub := newPublisher(t, cfg)
	require.NoError(t, pub.EnsureStream(t.Context(), topic))
	_, js := jsClient(t, cfg.URL)
	huge := strings.Repeat("h", 60_000) // JetStream takes headers up to 64 KiB
	for _, h := range []natsgo.Header{
		{"Multi": {"a", "b"}},
		{"Bad-Utf8": {"\xff\xfe"}},
		{nats.UUIDHeader: {"u1", "u2"}},
		{"Idempo-Enc-!!": {"@@"}},
		{"Huge": {huge}},
		{},
	} {
		_, err := js.PublishMsg(t.Context(), &natsgo.Msg{Subject: topic, Header: h, Data: []byte(huge)})
		require.NoError(t, err)
	}
	odd := message.NewMessage(watermill.NewUUID(), []byte("odd"))
	odd.Metadata.Set("cloudEvents:id", "evt-1")
	odd.Metadata.Set("idempo_panic_stack", "line 1\nline 2\r\n")
	odd.Metadata.Set("spaced", "  padded\t")
	odd.Metadata.Set("with space", "v")
	odd.Metadata.Set("empty", "")
	require.NoError(t, pub.Publish(topic, odd))

	got := receive(t, subscribe(t, newSubscriber(t, cfg), topic), 7, 30*time.Second)
	malformed := func(i int) string { return got[i].Metadata.Get(dlqmeta.KeyMalformed) }
	require.Equal(t, `["a","b"]`, got[0].Metadata.Get("Multi"))
	require.Empty(t, malformed(0))
	require.Contains(t, malformed(1), "not UTF-8")
	require.Contains(t, malformed(2), "2 values")
	require.Contains(t, malformed(3), "does not decode")
	require.Equal(t, huge, got[4].Metadata.Get("Huge"))
	require.Len(t, got[4].Payload, len(huge))
	require.Empty(t, malformed(4))
	require.Empty(t, malformed(5))
	require.Empty(t, got[5].UUID)
	back := got[6]
	require.Equal(t, odd.UUID, back.UUID)
	require.Empty(t, malformed(6))
	for k, v := range odd.Metadata {
		require.Equal(t, v, back.Metadata.Get(k), k)
	}
}
