package kafkadlq_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/kafkadlq"
	"github.com/idempo/idempo/dlq/resolution"
	resmem "github.com/idempo/idempo/dlq/resolution/memstore"
	resredis "github.com/idempo/idempo/dlq/resolution/redisstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(dlqtest.CrashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	goleak.VerifyTestMain(m,
		// sarama's metrics library starts one process-wide ticker goroutine
		// the first time a meter is created; it never stops, by design.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

func startEmbedded(t *testing.T, cfg ...embedded.Config) *embedded.Cluster {
	t.Helper()
	var c embedded.Config
	if len(cfg) > 0 {
		c = cfg[0]
	}
	e, err := embedded.Start(c)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

func newSource(t *testing.T, e *embedded.Cluster) *kafkadlq.Source {
	t.Helper()
	s, err := kafkadlq.NewSource(e.Config(""), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// world is one consumer under test in a consumer group of an embedded
// cluster, its dedup store in memory.
type world struct {
	*dlqtest.World
	emb *embedded.Cluster
}

func newWorld(t *testing.T, cfg ...embedded.Config) *world {
	t.Helper()
	return newWorldWithStore(t, memstore.New(nil), resmem.New(nil), cfg...)
}

// newWorldWithStore is newWorld with the given dedup and resolution stores.
func newWorldWithStore(t *testing.T, store dedup.Store, resolutions resolution.Store, cfg ...embedded.Config) *world {
	t.Helper()
	w := &world{emb: startEmbedded(t, cfg...)}
	pub, err := kafka.NewPublisher(w.emb.Config(""), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	w.World = dlqtest.NewWorld(t, "orders_"+watermill.NewShortUUID(), dlqtest.Backend{
		Store: store, Resolutions: resolutions, Source: newSource(t, w.emb), Publisher: pub, DLQPublisher: pub,
		NewSubscriber: func() (message.Subscriber, error) {
			sub, err := kafka.NewSubscriber(w.emb.Config(dlqtest.Handler), nil)
			if err != nil {
				return nil, err
			}
			return sub, nil
		},
	})
	return w
}

func redisAddr() string {
	if a := os.Getenv("IDEMPO_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// newRedisStores returns a Redis dedup store and resolution store under
// prefix, whose keys are removed at cleanup: stores the crash helper process
// shares.
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

// crashHelper is the child process of TestReplayCrashLosesNothing: it
// replays every unresolved entry through a publisher that hangs after the
// first republish, so the parent can kill it there with SIGKILL.
func crashHelper() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "crash helper:", err); return 2 }
	brokers := strings.Split(os.Getenv("IDEMPO_KAFKA_BROKERS"), ",")
	st, err := resredis.New(redis.NewClient(&redis.Options{Addr: redisAddr()}), &resredis.Options{Prefix: os.Getenv("IDEMPO_PREFIX")})
	if err != nil {
		return fail(err)
	}
	src, err := kafkadlq.NewSource(kafka.Config{Brokers: brokers}, nil)
	if err != nil {
		return fail(err)
	}
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers}, nil)
	if err != nil {
		return fail(err)
	}
	return dlqtest.CrashHelper(src, st, pub, os.Getenv("IDEMPO_DLQ_TOPIC"))
}
