package redisstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
)

// benchWorkers is the concurrency of the parallel benchmarks.
const benchWorkers = 16

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

func benchClient(b *testing.B) *redis.Client {
	return newClient(b, &redis.Options{PoolSize: 2 * benchWorkers})
}

// BenchmarkClaimComplete measures one processed message, a Claim of a new
// key and its Complete (two round trips; "coalesced" with Options.Coalesce),
// beside its floor: go-redis sending
// two no-op EVALSHAs per iteration at the same concurrency, the least any
// two-round-trip protocol costs on this client. Both are sub-benchmarks of
// one benchmark, so that -count alternates them and each pair shares the
// machine's state.
func BenchmarkClaimComplete(b *testing.B) {
	for _, workers := range []int{1, benchWorkers} {
		b.Run(fmt.Sprintf("store/workers=%d", workers), func(b *testing.B) { benchStore(b, workers, false) })
		b.Run(fmt.Sprintf("coalesced/workers=%d", workers), func(b *testing.B) { benchStore(b, workers, true) })
		b.Run(fmt.Sprintf("floor/workers=%d", workers), func(b *testing.B) { benchFloor(b, workers) })
	}
}

func benchStore(b *testing.B, workers int, coalesce bool) {
	c := benchClient(b)
	prefix := randomPrefix(b)
	dropPrefix(b, c, prefix)
	st, err := redisstore.New(c, &redisstore.Options{Prefix: prefix, Coalesce: coalesce})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	b.ReportAllocs()
	runWorkers(b, workers, func(i int64) error {
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
}

var noopScript = redis.NewScript(`return 1`)

func benchFloor(b *testing.B, workers int) {
	c := benchClient(b)
	ctx := context.Background()
	if err := noopScript.Load(ctx, c).Err(); err != nil {
		b.Fatal(err)
	}
	keys := []string{"idempo-bench-floor:{x}"}
	b.ReportAllocs()
	runWorkers(b, workers, func(int64) error {
		if err := noopScript.Run(ctx, c, keys, "a", 1).Err(); err != nil {
			return err
		}
		return noopScript.Run(ctx, c, keys, "a", 1).Err()
	})
}
