package amqpdlq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
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
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/resolution"
	resredis "github.com/idempo/idempo/dlq/resolution/redisstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(dlqtest.CrashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	goleak.VerifyTestMain(m)
}

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

// newRedisStores returns a Redis dedup store and resolution store under
// prefix, whose keys are removed at cleanup.
func newRedisStores(t *testing.T, prefix string) (dedup.Store, resolution.Store) {
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
	rs, err := resredis.New(c, &resredis.Options{Prefix: prefix})
	require.NoError(t, err)
	return st, rs
}

// world is one consumer under test on RabbitMQ: its topic a classic queue,
// its DLQ a stream queue, its dedup store in Redis.
type world struct {
	*dlqtest.World
	cfg      amqp.Config
	prefix   string
	dlqPub   *amqp.Publisher
	replayer *amqpdlq.ReplayPublisher
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{cfg: amqp.Config{URL: brokerURL(), NackDelay: 100 * time.Millisecond}}
	topic := unique("orders")
	dlqTopic := dlq.DefaultTopic(topic, "")
	deleteQueues(t, topic, dlqTopic, dlqTopic+".parked")
	w.prefix = "idempo-dlqtest-" + watermill.NewShortUUID() + ":"
	store, resolutions := newRedisStores(t, w.prefix)

	pub, err := amqp.NewPublisher(w.cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.DeclareQueue(topic))
	source, err := amqpdlq.NewSource(brokerURL(), &amqpdlq.Options{Idle: 500 * time.Millisecond, FirstWait: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = source.Close() })
	w.replayer, err = amqpdlq.NewReplayPublisher(w.cfg, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.replayer.Close() })
	w.dlqPub, err = amqpdlq.NewDLQPublisher(w.cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.dlqPub.Close() })

	w.World = dlqtest.NewWorld(t, topic, dlqtest.Backend{
		Store: store, Resolutions: resolutions, Source: source, Publisher: pub, DLQPublisher: w.dlqPub,
		NewSubscriber: func() (message.Subscriber, error) { return amqp.NewSubscriber(w.cfg, nil) },
	})
	return w
}

// crashHelper is the child process of TestReplayCrashLosesNothing: it
// replays every unresolved entry through a publisher that hangs after the
// first republish, so the parent can kill it there with SIGKILL.
func crashHelper() int {
	c := redis.NewClient(&redis.Options{Addr: redisAddr()})
	st, err := resredis.New(c, &resredis.Options{Prefix: os.Getenv("IDEMPO_PREFIX")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	src, err := amqpdlq.NewSource(brokerURL(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	rp, err := amqpdlq.NewReplayPublisher(amqp.Config{URL: brokerURL()}, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	return dlqtest.CrashHelper(src, st, rp, os.Getenv("IDEMPO_DLQ_TOPIC"))
}
