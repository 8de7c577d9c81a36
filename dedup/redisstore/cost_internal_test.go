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

// TestScriptCost measures Redis's cost per call of the claim and complete
// scripts for fresh keys, beside a no-op script, for docs/stores-redis.md:
// the EVALSHA time of INFO commandstats and the server process's CPU time
// (INFO cpu, which includes reading and answering the call). It needs a server of its own,
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
		before, cpuBefore := evalshaUsec(t, c), serverCPU(t, c)
		for i := range n {
			require.NoError(t, fn(i))
		}
		after, cpuAfter := evalshaUsec(t, c), serverCPU(t, c)
		t.Logf("%-22s %.2f µs of EVALSHA time per call; %.2f µs of the server process's CPU per call", name,
			float64(after-before)/n, float64(cpuAfter-cpuBefore)/float64(time.Microsecond)/n)
	}
	measure("claim (new key)", func(i int) error { _, err := st.Claim(ctx, keys[i], reqs[i]); return err })
	measure("complete", func(i int) error { return st.Complete(ctx, keys[i], reqs[i].Token, time.Hour) })
	measure("claim (done key)", func(i int) error { _, err := st.Claim(ctx, keys[i], reqs[i]); return err })
	measure("no-op script", func(int) error { return noop.Run(ctx, c, []string{"cost:{x}"}, "a", 1).Err() })
}

var noop = redis.NewScript(`return 1`)

// serverCPU reads the server process's CPU time (user and system, INFO
// cpu): unlike commandstats' usec, which is elapsed time, it does not grow
// when the machine is busy and the server waits for a core.
func serverCPU(t *testing.T, c *redis.Client) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	require.NoError(t, err)
	var total float64
	for _, line := range strings.Split(info, "\n") {
		for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), f); ok {
				x, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				total += x
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

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
