package bench

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idempo/idempo/dedup"
)

// storeFloor is the store alone at the stack's concurrency: workers
// goroutines claim and complete n fresh keys, one message each, through the
// store's own client (sharing pipelines or statements between them, as under
// the stack). Its messages per second bound what the stack can reach on
// this store with that many messages in flight; no broker, router or
// handler is involved.
func storeFloor(ctx context.Context, st dedup.Store, scope string, n, workers int) (float64, error) {
	workers = max(workers, 1)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				key := dedup.Key{Scope: scope, ID: "f" + strconv.FormatInt(i, 10)}
				tok := dedup.NewToken()
				res, err := st.Claim(ctx, key, dedup.ClaimRequest{Token: tok, Lease: time.Minute, Retention: retention})
				if err == nil && res.Status != dedup.StatusAcquired {
					err = fmt.Errorf("claim of fresh key %s: %v", key, res.Status)
				}
				if err == nil {
					err = st.Complete(ctx, key, tok, retention)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("store floor: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// ratio rounds a/b to four decimals (0 when b is 0).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1e4) / 1e4
}
