package redisscripts_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/internal/redisscripts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every script compiles on the server (SCRIPT LOAD) under the hash go-redis
// sends with EVALSHA. Their behaviour is the store's: dedup/redisstore runs
// the conformance suite on them.
func TestScriptsLoad(t *testing.T) {
	addr := os.Getenv("IDEMPO_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, s := range map[string]*redis.Script{
		"Claim": redisscripts.Claim, "Extend": redisscripts.Extend, "Finish": redisscripts.Finish,
		"Release": redisscripts.Release, "Due": redisscripts.Due,
	} {
		sha, err := s.Load(ctx, c).Result()
		require.NoError(t, err, "%s does not load (is Redis running at %s?)", name, addr)
		require.Equal(t, s.Hash(), sha, name)
	}
}
