package sqlstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// BenchmarkSharing measures one processed message (Claim of a new key, then
// Complete) with 1, 16 and 64 concurrent callers on a pool of 16
// connections, with round trips shared (the default) and not. Besides
// ns/op (wall time per message over all callers) it reports the median
// latency of one message (p50-µs), the statements sent per message
// (stmts/msg) and the mean rows of a shared statement (rows/stmt).
func BenchmarkSharing(b *testing.B) {
	for _, d := range dialects {
		for _, mode := range []string{"shared", "unshared"} {
			for _, callers := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("%s/%s/callers=%d", d, mode, callers), func(b *testing.B) {
					benchSharing(b, d, mode == "unshared", callers)
				})
			}
		}
	}
}

// BenchmarkSharingInbox is BenchmarkSharing through the transactional
// inbox: the claims are shared, and each message's CompleteInTx, with one
// business INSERT, is its own transaction.
func BenchmarkSharingInbox(b *testing.B) {
	for _, d := range dialects {
		for _, mode := range []string{"shared", "unshared"} {
			for _, callers := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("%s/%s/callers=%d", d, mode, callers), func(b *testing.B) {
					benchSharingMode(b, d, mode == "unshared", callers, true)
				})
			}
		}
	}
}

func benchSharing(b *testing.B, d sqlstore.Dialect, unshared bool, callers int) {
	benchSharingMode(b, d, unshared, callers, false)
}

func benchSharingMode(b *testing.B, d sqlstore.Dialect, unshared bool, callers int, inbox bool) {
	st, _ := newStoreWith(b, d, func(o *sqlstore.Options) { o.DisableSharing = unshared })
	var insert string
	if inbox {
		insert = insertEffect(d, createEffects(b, st.DB(), d))
	}
	ctx := context.Background()
	scope := randomName("bench-")
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	runCallers(b, callers, func(i int64) error {
		start := time.Now()
		id := fmt.Sprint(i)
		k := dedup.Key{Scope: scope, ID: id}
		req := benchReq()
		res, err := st.Claim(ctx, k, req)
		if err != nil {
			return err
		}
		if res.Status != dedup.StatusAcquired {
			return fmt.Errorf("claim %s: %v", k, res.Status)
		}
		if inbox {
			err = st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				_, err := tx.ExecContext(ctx, insert, id, 0)
				return err
			})
		} else {
			err = st.Complete(ctx, k, req.Token, time.Hour)
		}
		if err != nil {
			return err
		}
		lat[i] = time.Since(start)
		return nil
	})
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	stmts := "stmts/msg"
	if inbox {
		stmts = "claim-stmts/msg" // CompleteInTx's statements are not counted
	}
	b.ReportMetric(float64(sqlstore.Statements(st))/float64(b.N), stmts)
	cb, c, pb, p := sqlstore.BatchStats(st)
	if cb+pb > 0 {
		b.ReportMetric(float64(c+p)/float64(cb+pb), "rows/stmt")
	}
}

// runCallers calls op b.N times spread over callers goroutines.
func runCallers(b *testing.B, callers int, op func(i int64) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	for range callers {
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
