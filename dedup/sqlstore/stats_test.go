package sqlstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// Concurrent claims and completions on a store without sharing send one
// statement each: a mean batch of exactly one row.
func TestSharingStatsUnshared(t *testing.T) {
	t.Parallel()
	st, _ := newStoreWith(t, sqlstore.Postgres, func(o *sqlstore.Options) { o.DisableSharing = true })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.Zero(t, st.SharingStats().RowsPerClaim(), "no claim yet")
	const workers, perWorker = 16, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				key := dedup.Key{Scope: "unshared", ID: fmt.Sprintf("w%d-%d", w, i)}
				tok := dedup.NewToken()
				if _, err := st.Claim(ctx, key, dedup.ClaimRequest{Token: tok, Lease: time.Minute, Retention: time.Hour}); err != nil {
					errs <- err
					return
				}
				if err := st.Complete(ctx, key, tok, time.Hour); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	s := st.SharingStats()
	require.Equal(t, sqlstore.SharingStats{
		ClaimStatements: workers * perWorker, ClaimRows: workers * perWorker,
		CompleteStatements: workers * perWorker, CompleteRows: workers * perWorker,
	}, s)
	require.InDelta(t, 1.0, s.RowsPerClaim(), 0)
	require.InDelta(t, 1.0, s.RowsPerComplete(), 0)
}

// Under concurrent callers the default store shares statements: more than
// one row per claim INSERT on average. (Whether calls meet depends on the
// scheduler; with 32 callers against a server round trip they always
// have here. TestSharingStatsCountsSharedRows pins the counting itself.)
func TestSharingStatsShared(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t, sqlstore.Postgres)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const workers, perWorker = 32, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				key := dedup.Key{Scope: "shared", ID: fmt.Sprintf("w%d-%d", w, i)}
				tok := dedup.NewToken()
				if _, err := st.Claim(ctx, key, dedup.ClaimRequest{Token: tok, Lease: time.Minute, Retention: time.Hour}); err != nil {
					errs <- err
					return
				}
				if err := st.Complete(ctx, key, tok, time.Hour); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	s := st.SharingStats()
	require.Equal(t, int64(workers*perWorker), s.ClaimRows, "every claim was one row of an INSERT")
	require.Greater(t, s.RowsPerClaim(), 1.0, "%+v", s)
}
