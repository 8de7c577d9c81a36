package sqlstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
)

// holdLead makes b look busy (a batch on the wire), so that the calls of
// concurrent goroutines queue up; once n are queued, it hands the lead to
// the first of them, as a leader whose batch returned does, and they go out
// together. start may run in another goroutine; it fails the test (without
// stopping it) if n calls do not queue within ctx.
func holdLead[T queued](ctx context.Context, t *testing.T, b *batcher[T], n int) (start func()) {
	t.Helper()
	b.mu.Lock()
	require.False(t, b.leading, "a batch is under way")
	b.leading = true
	b.mu.Unlock()
	return func() {
		for {
			b.mu.Lock()
			q := len(b.queue)
			var first T
			if q >= n {
				first = b.queue[0]
			}
			b.mu.Unlock()
			if q >= n {
				first.wake() <- true
				return
			}
			select {
			case <-ctx.Done():
				t.Errorf("%d of %d calls queued: %v", q, n, ctx.Err())
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// Concurrent claims and completions that queue up while a batch is on the
// wire go out in one statement each, and SharingStats counts them so: 16
// rows in one claim INSERT and one completion UPDATE.
func TestSharingStatsCountsSharedRows(t *testing.T) {
	t.Parallel()
	for _, d := range []Dialect{Postgres, MySQL, SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			st := batchStore(t, d)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const n = 16
			keys := make([]dedup.Key, n)
			reqs := make([]dedup.ClaimRequest, n)
			for i := range keys {
				keys[i] = dedup.Key{Scope: "stats", ID: fmt.Sprintf("e%d", i)}
				reqs[i] = batchReq()
			}
			each := func(fn func(i int) error) {
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i := range n {
					wg.Go(func() { errs <- fn(i) })
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err)
				}
			}

			start := holdLead(ctx, t, st.claims, n)
			go start()
			each(func(i int) error {
				res, err := st.Claim(ctx, keys[i], reqs[i])
				if err == nil && res.Status != dedup.StatusAcquired {
					err = fmt.Errorf("claim %s: %v", keys[i], res.Status)
				}
				return err
			})
			start = holdLead(ctx, t, st.completes, n)
			go start()
			each(func(i int) error { return st.Complete(ctx, keys[i], reqs[i].Token, time.Hour) })

			s := st.SharingStats()
			require.Equal(t, SharingStats{ClaimStatements: 1, ClaimRows: n, CompleteStatements: 1, CompleteRows: n}, s)
			require.InDelta(t, float64(n), s.RowsPerClaim(), 0)
			require.InDelta(t, float64(n), s.RowsPerComplete(), 0)
		})
	}
}
