package natsdlq_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/natsdlq"
	"github.com/idempo/idempo/dlq/resolution"
	resredis "github.com/idempo/idempo/dlq/resolution/redisstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(dlqtest.CrashHelperEnv) != "" {
		os.Exit(crashHelper())
	}
	goleak.VerifyTestMain(m)
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
	cfg, err := nats.ParseURL(serverURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	src, err := natsdlq.NewSource(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	rp, err := natsdlq.NewReplayPublisher(cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	return dlqtest.CrashHelper(src, st, rp, os.Getenv("IDEMPO_DLQ_TOPIC"))
}

func serverURL() string {
	if u := os.Getenv("IDEMPO_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func redisAddr() string {
	if a := os.Getenv("IDEMPO_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// deleteStreams removes the streams of test topics when the test ends.
func deleteStreams(t *testing.T, topics ...string) {
	t.Helper()
	t.Cleanup(func() {
		nc, err := natsgo.Connect(serverURL())
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, topic := range topics {
			if name, err := nats.StreamName(topic); err == nil {
				_ = js.DeleteStream(ctx, name)
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

// world is one consumer under test on NATS JetStream: its topic and its
// DLQ streams of the preset, its dedup store in Redis.
type world struct {
	*dlqtest.World
	cfg      nats.Config
	dlqPub   *nats.Publisher
	replayer *nats.Publisher
	source   *natsdlq.Source
	prefix   string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	cfg, err := nats.ParseURL(serverURL())
	require.NoError(t, err)
	cfg.NackDelay = 100 * time.Millisecond
	w := &world{cfg: cfg}
	topic := "idempo_dlqtest.orders." + watermill.NewShortUUID()
	dlqTopic := dlq.DefaultTopic(topic, "")
	deleteStreams(t, topic, dlqTopic, dlqops.ParkingTopic(dlqTopic))
	w.prefix = "idempo-dlqtest-" + watermill.NewShortUUID() + ":"
	store, resolutions := newRedisStores(t, w.prefix)

	pub, err := nats.NewPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.EnsureStream(context.Background(), topic))
	w.source, err = natsdlq.NewSource(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.source.Close() })
	w.replayer, err = natsdlq.NewReplayPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.replayer.Close() })
	w.dlqPub, err = natsdlq.NewDLQPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.dlqPub.Close() })

	w.World = dlqtest.NewWorld(t, topic, dlqtest.Backend{
		Store: store, Resolutions: resolutions, Source: w.source, Publisher: pub, DLQPublisher: w.dlqPub,
		NewSubscriber: func() (message.Subscriber, error) { return nats.NewSubscriber(cfg, nil) },
	})
	return w
}

func deleteStream(name string) error {
	nc, err := natsgo.Connect(serverURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return js.DeleteStream(ctx, name)
}
