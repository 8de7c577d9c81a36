package redisstore_test

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/redisstore"
	"github.com/idempo/idempo/dlq/resolution/resolutiontest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func addr() string {
	if a := os.Getenv("IDEMPO_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// open returns a store under prefix on a new client, closed at cleanup.
func open(t *testing.T, prefix string) resolution.Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr()})
	t.Cleanup(func() { _ = c.Close() })
	st, err := redisstore.New(c, &redisstore.Options{Prefix: prefix})
	require.NoError(t, err)
	return st
}

func TestConformance(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: addr()})
	defer c.Close()
	require.NoError(t, c.Ping(context.Background()).Err(), "Redis is required at %s", addr())
	prefix := "idempo-restest-" + resolutiontestPrefix() + ":"
	t.Cleanup(func() {
		keys, _ := c.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			_ = c.Del(context.Background(), keys...).Err()
		}
	})
	resolutiontest.Run(t, func(t *testing.T) resolution.Store { return open(t, prefix) }, resolutiontest.Features{
		Parallel: true,
		Reopen:   func(t *testing.T, _ resolution.Store) resolution.Store { return open(t, prefix) },
	})
}

func TestOptions(t *testing.T) {
	_, err := redisstore.New(nil, nil)
	require.ErrorContains(t, err, "nil client")
	c := redis.NewClient(&redis.Options{Addr: addr()})
	defer c.Close()
	_, err = redisstore.New(c, &redisstore.Options{Prefix: "a{b"})
	require.ErrorContains(t, err, "must not contain")
	st, err := redisstore.New(c, nil)
	require.NoError(t, err)
	require.Equal(t, "idempo:dlq:{orders.dlq}", st.Key("orders.dlq"))
}
