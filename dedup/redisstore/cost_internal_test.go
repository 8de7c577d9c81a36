package redisstore

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
)

// TestScriptCost measures Redis's CPU per call of the claim and complete
// scripts (INFO commandstats, usec per EVALSHA) for fresh keys, beside a
// no-op script, for docs/stores-redis.md. It needs a server of its own,
// since other clients' EVALSHAs would count: it runs only when
// IDEMPO_REDIS_COST_ADDR names one (e.g. redis-server --port 6391).
func TestScriptCost(t *testing.T) {
	addr := os.Getenv("IDEMPO_REDIS_COST_ADDR")
	if addr == "" {
		t.Skip("set IDEMPO_REDIS_COST_ADDR to a Redis server of its own to measure the scripts' server CPU")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := New(c, &Options{Prefix: fmt.Sprintf("cost%d:", time.Now().UnixNano()), DisableSharing: true, EvictionPolicyCheck: EvictionCheckOff})
	require.NoError(t, err)
	const n = 20000
	keys := make([]dedup.Key, n)
	reqs := make([]dedup.ClaimRequest, n)
	for i := range keys {
		keys[i] = dedup.Key{Scope: "cost", ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)}
		reqs[i] = dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: time.Hour, Fingerprint: make([]byte, 32)}
	}
	// Load the scripts first, so that every measured call is one EVALSHA.
	for _, s := range []*redis.Script{claimScript, finishScript, noop} {
		require.NoError(t, s.Load(ctx, c).Err())
	}
	measure := func(name string, fn func(i int) error) {
		before := evalshaUsec(t, c)
		for i := range n {
			require.NoError(t, fn(i))
		}
		after := evalshaUsec(t, c)
		t.Logf("%-22s %.2f µs of server CPU per call", name, float64(after-before)/n)
	}
	measure("claim (new key)", func(i int) error { _, err := st.Claim(ctx, keys[i], reqs[i]); return err })
	measure("complete", func(i int) error { return st.Complete(ctx, keys[i], reqs[i].Token, time.Hour) })
	measure("claim (done key)", func(i int) error { _, err := st.Claim(ctx, keys[i], reqs[i]); return err })
	measure("no-op script", func(int) error { return noop.Run(ctx, c, []string{"cost:{x}"}, "a", 1).Err() })
}

var noop = redis.NewScript(`return 1`)

// evalshaUsec reads the total usec of EVALSHA from INFO commandstats.
func evalshaUsec(t *testing.T, c *redis.Client) int64 {
	info, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") {
			continue
		}
		for _, f := range strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "cmdstat_evalsha:")), ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				require.NoError(t, err)
				return n
			}
		}
	}
	return 0
}
