package kafkadlq_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/kafkadlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// sarama's metrics library starts one process-wide ticker goroutine
		// the first time a meter is created; it never stops, by design.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func startEmbedded(t *testing.T, opts ...kafka.EmbeddedOption) *kafka.Embedded {
	t.Helper()
	e, err := kafka.StartEmbedded(opts...)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

func newSource(t *testing.T, e *kafka.Embedded) *kafkadlq.Source {
	t.Helper()
	s, err := kafkadlq.NewSource(e.Addrs())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// world is one consumer under test: a router with the idempo stack in a
// consumer group of an embedded cluster, and a ledger of effects.
type world struct {
	t        *testing.T
	emb      *kafka.Embedded
	topic    string
	dlqTopic string
	store    dedup.Store
	broken   atomic.Bool
	mu       sync.Mutex
	effects  map[string]int
	pub      message.Publisher
	source   *kafkadlq.Source
}

func newWorld(t *testing.T, opts ...kafka.EmbeddedOption) *world {
	t.Helper()
	w := &world{t: t, effects: map[string]int{}, store: memstore.New(nil)}
	w.emb = startEmbedded(t, opts...)
	w.topic = "orders_" + watermill.NewShortUUID()
	w.dlqTopic = dlq.DefaultTopic(w.topic, "")
	w.broken.Store(true)
	var err error
	w.pub, err = kafka.NewPublisher(w.emb.Config(""), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.pub.Close() })
	w.source = newSource(t, w.emb)
	return w
}

func (w *world) run() {
	t := w.t
	stack, err := middleware.New(middleware.Config{
		Store: w.store, DLQPublisher: w.pub, Logger: quiet,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
	})
	require.NoError(t, err)
	sub, err := kafka.NewSubscriber(w.emb.Config("billing"), nil)
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler("billing", w.topic, sub, func(m *message.Message) error {
		_, err := stack.Middleware(func(m *message.Message) ([]*message.Message, error) {
			if w.broken.Load() && string(m.Payload) == "poison" {
				return nil, retry.Permanent(errors.New("bug: cannot bill " + m.UUID))
			}
			w.mu.Lock()
			w.effects[m.UUID]++
			w.mu.Unlock()
			return nil, nil
		})(m)
		return err
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = router.Run(context.Background())
	}()
	<-router.Running()
	t.Cleanup(func() {
		_ = router.Close()
		<-done
		_ = stack.Close()
	})
}

func (w *world) publish(id, payload string) {
	w.t.Helper()
	require.NoError(w.t, w.pub.Publish(w.topic, message.NewMessage(id, []byte(payload))))
}

func (w *world) effect(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.effects[id]
}

func (w *world) ops(pub message.Publisher) *dlq.Ops {
	w.t.Helper()
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: w.source, Store: w.store, Publisher: pub})
	require.NoError(w.t, err)
	return ops
}

func list(t *testing.T, ops *dlq.Ops, topic string, f dlq.Filter) []dlq.Entry {
	t.Helper()
	var out []dlq.Entry
	require.NoError(t, ops.List(context.Background(), topic, f, func(e dlq.Entry) error {
		out = append(out, e)
		return nil
	}))
	return out
}

func waitEntries(t *testing.T, ops *dlq.Ops, topic string, n int) []dlq.Entry {
	t.Helper()
	var got []dlq.Entry
	require.Eventually(t, func() bool {
		got = nil
		err := ops.List(context.Background(), topic, dlq.Filter{}, func(e dlq.Entry) error {
			got = append(got, e)
			return nil
		})
		return err == nil && len(got) == n
	}, 60*time.Second, 100*time.Millisecond, "want %d unresolved entries", n)
	return got
}

func waitEffects(t *testing.T, w *world, ids ...string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if w.effect(id) == 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "effects of %v", ids)
}

func replayMessage(e dlq.Entry) *message.Message {
	m := message.NewMessage(e.OriginalUUID, e.Message.Payload)
	m.Metadata.Set(dlq.KeyReplays, strconv.Itoa(e.Replays+1))
	m.Metadata.Set(dlq.KeyReplayID, e.ID)
	return m
}

func positions(es []dlq.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID + "@" + e.Position
	}
	return out
}
