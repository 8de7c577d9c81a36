package redisstreamdlq_test

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
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/redisstreamdlq"
	"github.com/idempo/idempo/dlq/resolution"
	resredis "github.com/idempo/idempo/dlq/resolution/redisstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(dlqtest.CrashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	goleak.VerifyTestMain(m)
}

func redisAddr() string {
	if a := os.Getenv("IDEMPO_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func streamURL() string { return "redis-stream://" + redisAddr() + "/0" }

func unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "idempo_dlqtest_rs_" + prefix + "_" + hex.EncodeToString(b[:])
}

// newRedisClient returns a client closed at cleanup, after deleting keys.
func newRedisClient(t *testing.T, keys ...string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr()})
	require.NoError(t, c.Ping(context.Background()).Err(), "Redis is required at %s", redisAddr())
	t.Cleanup(func() {
		_ = c.Del(context.Background(), keys...).Err()
		_ = c.Close()
	})
	return c
}

// newRedisStores returns a Redis dedup store and resolution store under
// prefix, whose keys are removed at cleanup.
func newRedisStores(t *testing.T, prefix string) (dedup.Store, resolution.Store) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr()})
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

// world is one consumer under test on Redis Streams: its topic and its DLQ
// streams, its dedup store in Redis.
type world struct {
	*dlqtest.World
	cfg      redisstream.Config
	prefix   string
	client   *redis.Client
	dlqPub   *redisstream.Publisher
	replayer *redisstream.Publisher
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{cfg: redisstream.Config{URL: streamURL(), NackDelay: 100 * time.Millisecond, Block: 100 * time.Millisecond}}
	topic := unique("orders")
	dlqTopic := dlq.DefaultTopic(topic, "")
	w.client = newRedisClient(t, topic, dlqTopic, dlqTopic+".parked")
	w.prefix = "idempo-dlqtest-" + watermill.NewShortUUID() + ":"
	store, resolutions := newRedisStores(t, w.prefix)

	pub, err := redisstream.NewPublisher(w.cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	source, err := redisstreamdlq.NewSource(streamURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = source.Close() })
	w.replayer, err = redisstreamdlq.NewReplayPublisher(w.cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.replayer.Close() })
	w.dlqPub, err = redisstreamdlq.NewDLQPublisher(w.cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.dlqPub.Close() })

	w.World = dlqtest.NewWorld(t, topic, dlqtest.Backend{
		Store: store, Resolutions: resolutions, Source: source, Publisher: pub, DLQPublisher: w.dlqPub,
		NewSubscriber: func() (message.Subscriber, error) { return redisstream.NewSubscriber(w.cfg, nil) },
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
	src, err := redisstreamdlq.NewSource(streamURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	rp, err := redisstreamdlq.NewReplayPublisher(redisstream.Config{URL: streamURL()}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	return dlqtest.CrashHelper(src, st, rp, os.Getenv("IDEMPO_DLQ_TOPIC"))
}
