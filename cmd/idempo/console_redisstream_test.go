package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dlq/redisstreamdlq"
)

// TestConsoleOnRedisStreams serves an unauthenticated console (loopback) on
// a Redis stream DLQ, and replays an entry through it as --operator; the
// replay lands in the destination stream and the DLQ keeps both entries.
func TestConsoleOnRedisStreams(t *testing.T) {
	orig := "idempo_clitest_console_rs_" + watermill.NewShortUUID()
	topic := orig + ".dlq"
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	require.NoError(t, client.Ping(context.Background()).Err(), "Redis is required at 127.0.0.1:6379")
	t.Cleanup(func() {
		_ = client.Del(context.Background(), orig, orig+".retry", topic).Err()
		_ = client.Close()
	})
	pub, err := redisstreamdlq.NewDLQPublisher(redisstream.Config{URL: redisStreamURL}, nil)
	require.NoError(t, err)
	defer pub.Close()
	id := deadLetter(t, pub, orig, "billing", "ev-s1", `{"n":1}`, permanentFailure())
	deadLetter(t, pub, orig, "billing", "ev-s2", `{"n":2}`, permanentFailure())
	s := serveConsole(t, "--broker", redisStreamURL, "--store", "sqlite://"+filepath.Join(t.TempDir(), "r.db"),
		"--topic", topic, "--unauthenticated", "--operator", "oncall")
	replayThroughConsole(s, topic, id, "ev-s1", orig+".retry", "oncall")
	require.Equal(t, 0, s.stop(), s.stderr.String())
	n, err := client.XLen(context.Background(), orig+".retry").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the replay is in the destination stream")
	n, err = client.XLen(context.Background(), topic).Result()
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "the console consumed nothing from the DLQ")
}

// deleteRedisStreams deletes streams a run left on the shared Redis (idempo
// verify leaves its topics for inspection, as on RabbitMQ).
func deleteRedisStreams(t *testing.T, streams ...string) {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer func() { _ = client.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = client.Del(ctx, streams...).Err()
}
