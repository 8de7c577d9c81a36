package redisstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/resolution/redisstore"
)

// BenchmarkResolutions100k reads the resolutions of a DLQ with 100,000
// resolved entries (what a console listing such a DLQ reads), written
// directly in the store's format.
func BenchmarkResolutions100k(b *testing.B) {
	const n = 100_000
	c := redis.NewClient(&redis.Options{Addr: addr()})
	defer c.Close()
	ctx := context.Background()
	prefix := "idempo-resbench-" + resolutiontestPrefix() + ":"
	st, err := redisstore.New(c, &redisstore.Options{Prefix: prefix})
	require.NoError(b, err)
	key := st.Key("orders.dlq")
	defer c.Del(ctx, key)
	p := c.Pipeline()
	for i := range n {
		p.HSet(ctx, key, fmt.Sprintf("entry-%06d", i), `{"s":"r","t":"0123456789abcdef0123456789abcdef","by":"alice@ops-1","a":1764000000000,"o":"replayed"}`)
		if i%5000 == 4999 {
			_, err := p.Exec(ctx)
			require.NoError(b, err)
		}
	}
	b.ResetTimer()
	for range b.N {
		got, err := st.Resolutions(ctx, "orders.dlq")
		require.NoError(b, err)
		require.Len(b, got, n)
	}
}
