package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/deduptest"
	"github.com/idempo/idempo/dedup/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	t.Parallel()
	shared := memstore.New(nil)
	deduptest.Run(t, func(*testing.T) dedup.Store { return shared }, deduptest.Features{Parallel: true})
}

func TestConformanceFreshStore(t *testing.T) {
	t.Parallel()
	deduptest.Run(t, func(*testing.T) dedup.Store { return memstore.New(nil) }, deduptest.Features{Parallel: true})
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestBoundedEvictsOnlyExpired(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	st := memstore.New(&memstore.Options{MaxKeys: 3, Now: clock.now})
	ctx := context.Background()
	claim := func(id string, retention time.Duration) (dedup.ClaimResult, error) {
		return st.Claim(ctx, dedup.Key{Scope: "s", ID: id}, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Second, Retention: retention})
	}
	for _, id := range []string{"a", "b", "c"} {
		_, err := claim(id, time.Minute)
		require.NoError(t, err)
	}
	_, err := claim("d", time.Minute)
	require.ErrorIs(t, err, memstore.ErrFull, "a live record is never evicted to make room")
	require.Equal(t, 3, st.Len())

	clock.t = clock.t.Add(2 * time.Minute)
	res, err := claim("d", time.Minute)
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	require.Equal(t, 1, st.Len(), "expired records were evicted")
}

func TestHeapStaysBounded(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	st := memstore.New(&memstore.Options{Now: clock.now})
	ctx := context.Background()
	k := dedup.Key{Scope: "s", ID: "x"}
	tok := dedup.NewToken()
	_, err := st.Claim(ctx, k, dedup.ClaimRequest{Token: tok, Lease: time.Second, Retention: time.Hour})
	require.NoError(t, err)
	for range 10_000 {
		require.NoError(t, st.Extend(ctx, k, tok, 2*time.Hour))
	}
	require.Equal(t, 1, st.Len())
	require.NoError(t, st.Complete(ctx, k, tok, time.Hour))
	clock.t = clock.t.Add(3 * time.Hour)
	_, err = claim2(st, ctx, "y")
	require.NoError(t, err)
	require.Equal(t, 1, st.Len())
}

func claim2(st *memstore.Store, ctx context.Context, id string) (dedup.ClaimResult, error) {
	return st.Claim(ctx, dedup.Key{Scope: "s", ID: id}, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Second, Retention: time.Hour})
}

func TestErrorsNameTheProblem(t *testing.T) {
	t.Parallel()
	st := memstore.New(nil)
	_, err := st.Claim(context.Background(), dedup.Key{Scope: "orders", ID: ""}, dedup.ClaimRequest{Token: "t", Lease: time.Second, Retention: time.Second})
	require.ErrorIs(t, err, dedup.ErrInvalidKey)
	require.Contains(t, err.Error(), "empty event ID")
}
