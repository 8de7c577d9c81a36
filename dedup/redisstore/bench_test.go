package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
)

// runWorkers calls op b.N times spread over workers goroutines.
func runWorkers(b *testing.B, workers int, op func(i int64) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(i); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
}

func benchClient(b *testing.B, callers int) *redis.Client {
	return newClient(b, &redis.Options{PoolSize: 2 * callers})
}

// roundTrips is a go-redis hook that counts round trips: one per command
// sent alone, one per pipeline.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// BenchmarkClaimComplete measures one processed message, a Claim of a new
// key and its Complete, with 1, 16 and 64 concurrent callers: "shared" is
// the store as it comes (concurrent calls share pipelines), "unshared" with
// Options.DisableSharing (two round trips a message), "floor" go-redis
// sending two no-op EVALSHAs per message at the same concurrency, the least
// any two-round-trip protocol costs on this client. It reports the round
// trips per message (rt/msg) besides ns/op. All are sub-benchmarks of one
// benchmark, so that -count alternates them and each set shares the
// machine's state.
func BenchmarkClaimComplete(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("shared/callers=%d", callers), func(b *testing.B) { benchStore(b, callers, false) })
		b.Run(fmt.Sprintf("unshared/callers=%d", callers), func(b *testing.B) { benchStore(b, callers, true) })
		b.Run(fmt.Sprintf("floor/callers=%d", callers), func(b *testing.B) { benchFloor(b, callers) })
	}
}

func benchStore(b *testing.B, callers int, unshared bool) {
	c := benchClient(b, callers)
	prefix := randomPrefix(b)
	dropPrefix(b, c, prefix)
	st, err := redisstore.New(c, &redisstore.Options{Prefix: prefix, DisableSharing: unshared})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	rt := &roundTrips{}
	c.AddHook(rt)
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	runWorkers(b, callers, func(i int64) error {
		start := time.Now()
		defer func() { lat[i] = time.Since(start) }()
		k := dedup.Key{Scope: "bench-" + run, ID: fmt.Sprintf("event-%d", i)}
		r := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Second, Retention: 5 * time.Minute}
		res, err := st.Claim(ctx, k, r)
		if err != nil {
			return err
		}
		if res.Status != dedup.StatusAcquired {
			return fmt.Errorf("claim %s: %v", k, res.Status)
		}
		return st.Complete(ctx, k, r.Token, 5*time.Minute)
	})
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rt/msg")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}

var noopScript = redis.NewScript(`return 1`)

func benchFloor(b *testing.B, callers int) {
	c := benchClient(b, callers)
	ctx := context.Background()
	if err := noopScript.Load(ctx, c).Err(); err != nil {
		b.Fatal(err)
	}
	keys := []string{"idempo-bench-floor:{x}"}
	b.ReportAllocs()
	runWorkers(b, callers, func(int64) error {
		if err := noopScript.Run(ctx, c, keys, "a", 1).Err(); err != nil {
			return err
		}
		return noopScript.Run(ctx, c, keys, "a", 1).Err()
	})
	b.ReportMetric(2, "rt/msg")
}
