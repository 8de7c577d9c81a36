package redisstream_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
)

// serverURL is the shared Redis the tests use: IDEMPO_REDIS_STREAM_URL or
// redis-stream://127.0.0.1:6379/0.
func serverURL() string {
	if u := os.Getenv("IDEMPO_REDIS_STREAM_URL"); u != "" {
		return u
	}
	return "redis-stream://127.0.0.1:6379/0"
}

// requireServer fails the test (it does not skip) when Redis is not
// reachable, and returns a config with short clocks for tests.
func requireServer(t *testing.T) redisstream.Config {
	t.Helper()
	cfg, err := redisstream.ParseURL(serverURL())
	require.NoError(t, err)
	c := rawClient(t, cfg.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Ping(ctx).Err(), "Redis is required at %s (set IDEMPO_REDIS_STREAM_URL to use another)", cfg.URL)
	return cfg
}

// rawClient opens a plain go-redis client on a redis-stream:// URL,
// closed at cleanup.
func rawClient(t *testing.T, streamURL string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL("redis" + streamURL[len("redis-stream"):])
	require.NoError(t, err)
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func uniqueStream(prefix string) string {
	return "idempo_test_rs_" + prefix + "_" + watermill.NewShortUUID()
}

// deleteStreams removes test streams at cleanup.
func deleteStreams(t *testing.T, streamURL string, streams ...string) {
	t.Helper()
	c := rawClient(t, streamURL)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Del(ctx, streams...).Err()
	})
}

func newPublisher(t *testing.T, cfg redisstream.Config) *redisstream.Publisher {
	t.Helper()
	p, err := redisstream.NewPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSubscriber(t *testing.T, cfg redisstream.Config) *redisstream.Subscriber {
	t.Helper()
	s, err := redisstream.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}
