package amqpdlq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/amqpdlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func brokerURL() string {
	if u := os.Getenv("IDEMPO_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func redisAddr() string {
	if a := os.Getenv("IDEMPO_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "idempo_dlqtest_" + prefix + "_" + hex.EncodeToString(b[:])
}

// deleteQueues removes test queues when the test ends.
func deleteQueues(t *testing.T, queues ...string) {
	t.Helper()
	t.Cleanup(func() {
		conn, err := amqp091.Dial(brokerURL())
		if err != nil {
			return
		}
		defer conn.Close()
		for _, q := range queues {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				_ = ch.Close()
			}
		}
	})
}

// newRedisStore returns a Redis dedup store under a fresh prefix, removed
// at cleanup.
func newRedisStore(t *testing.T, prefix string) dedup.Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr()})
	require.NoError(t, c.Ping(context.Background()).Err(), "Redis is required at %s", redisAddr())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
		_ = c.Close()
	})
	st, err := redisstore.New(c, &redisstore.Options{Prefix: prefix})
	require.NoError(t, err)
	return st
}

// world is one consumer under test: a router with the idempo stack on a
// classic queue, its DLQ a stream queue, and a ledger of effects.
type world struct {
	t        *testing.T
	cfg      amqp.Config
	topic    string
	dlqTopic string
	store    dedup.Store
	prefix   string
	broken   atomic.Bool
	mu       sync.Mutex
	effects  map[string]int
	pub      *amqp.Publisher
	source   *amqpdlq.Source
	replayer *amqpdlq.ReplayPublisher
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, cfg: amqp.Config{URL: brokerURL(), NackDelay: 100 * time.Millisecond}, effects: map[string]int{}}
	w.topic = unique("orders")
	w.dlqTopic = dlq.DefaultTopic(w.topic, "")
	deleteQueues(t, w.topic, w.dlqTopic, w.dlqTopic+".parked")
	prefix := "idempo-dlqtest-" + watermill.NewShortUUID() + ":"
	w.prefix = prefix
	w.store = newRedisStore(t, prefix)
	w.broken.Store(true)

	var err error
	w.pub, err = amqp.NewPublisher(w.cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.pub.Close() })
	require.NoError(t, w.pub.DeclareQueue(w.topic))
	w.source, err = amqpdlq.NewSource(brokerURL(), &amqpdlq.Options{Idle: 500 * time.Millisecond, FirstWait: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.source.Close() })
	w.replayer, err = amqpdlq.NewReplayPublisher(w.cfg, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.replayer.Close() })
	return w
}

// run starts the consumer: a Watermill router whose handler fails
// permanently for "poison" payloads while broken is set.
func (w *world) run() {
	t := w.t
	dlqPub, err := amqpdlq.NewDLQPublisher(w.cfg, nil)
	require.NoError(t, err)
	stack, err := middleware.New(middleware.Config{
		Store: w.store, DLQPublisher: dlqPub, Logger: quiet,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
	})
	require.NoError(t, err)
	sub, err := amqp.NewSubscriber(w.cfg, nil)
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
		_ = dlqPub.Close()
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

// waitEntries waits until n unresolved entries are listed.
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
	}, 60*time.Second, 200*time.Millisecond, "want %d unresolved entries", n)
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

// replayMessage builds what a replay of e publishes, to deliver it again.
func replayMessage(e dlq.Entry) *message.Message {
	m := message.NewMessage(e.OriginalUUID, e.Message.Payload)
	m.Metadata.Set(dlq.KeyReplays, strconv.Itoa(e.Replays+1))
	m.Metadata.Set(dlq.KeyReplayID, e.ID)
	return m
}

// Crash helper: a child process that replays every unresolved entry through
// a publisher that hangs after the first republish, so the parent can kill
// it there with SIGKILL.
const crashHelperEnv = "IDEMPO_AMQPDLQ_CRASH_HELPER"

type hangingPublisher struct {
	inner message.Publisher
	n     atomic.Int32
}

func (p *hangingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.inner.Publish(topic, msgs...); err != nil {
		return err
	}
	fmt.Printf("republished %d\n", p.n.Add(1))
	time.Sleep(time.Hour) // killed here
	return nil
}

func (p *hangingPublisher) Close() error { return p.inner.Close() }

func crashHelper() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "crash helper:", err); return 2 }
	c := redis.NewClient(&redis.Options{Addr: redisAddr()})
	st, err := redisstore.New(c, &redisstore.Options{Prefix: os.Getenv("IDEMPO_PREFIX")})
	if err != nil {
		return fail(err)
	}
	src, err := amqpdlq.NewSource(brokerURL(), nil)
	if err != nil {
		return fail(err)
	}
	rp, err := amqpdlq.NewReplayPublisher(amqp.Config{URL: brokerURL()}, nil, nil)
	if err != nil {
		return fail(err)
	}
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: src, Store: st, Publisher: &hangingPublisher{inner: rp}})
	if err != nil {
		return fail(err)
	}
	if _, err := ops.Replay(context.Background(), os.Getenv("IDEMPO_DLQ_TOPIC"), dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
		return fail(err)
	}
	return 0
}
