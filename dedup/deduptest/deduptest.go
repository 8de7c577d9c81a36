package deduptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
)

// Features describes what a store under test can do and how its clock behaves.
type Features struct {
	// Granularity is the resolution of the store's clock and expiry (1 ms for
	// Redis PX, 1 µs for SQL timestamps, 1 s for a store that rounds to
	// seconds). Lease and retention waits are scaled up from it. Defaults to
	// 1 ms.
	Granularity time.Duration
	// NoLeaseRemaining is set when the store reports 0 for
	// ClaimResult.LeaseRemaining (allowed by the contract).
	NoLeaseRemaining bool
	// Parallel runs the cases with t.Parallel. The store must then keep the
	// cases apart (each case uses its own random scope).
	Parallel bool
	// Reopen returns a second, freshly opened instance of the store st (one
	// that newStore returned) on the same backend, as another process or a
	// restart would open it: a new client or connection pool, the same
	// server, database file, table or key prefix. It should register its
	// cleanup with t.Cleanup. The "Reopen" case then checks that the new
	// instance sees the delivery counters and the records (done,
	// dead-lettered, held, released, due for the DLQ) that st left. Nil
	// skips that case: right for a store that keeps its records in the
	// process (memory).
	Reopen func(t *testing.T, st dedup.Store) dedup.Store
}

// Run runs the conformance suite against the store that newStore returns.
// newStore is called once per case; it may return the same store each time
// (every case uses its own random scope) and should register cleanup with
// t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) dedup.Store, features Features) {
	t.Helper()
	if features.Granularity <= 0 {
		features.Granularity = time.Millisecond
	}
	s := &suite{newStore: newStore, f: features}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ClaimNewKey", s.claimNewKey},
		{"ConcurrentClaimsOneWinner", s.concurrentClaims},
		{"LeaseExpiryThenReclaim", s.leaseExpiryThenReclaim},
		{"ExtendKeepsLease", s.extendKeepsLease},
		{"ExtendAfterExpiryWithoutTakeover", s.extendAfterExpiryWithoutTakeover},
		{"CompleteThenDuplicate", s.completeThenDuplicate},
		{"CompleteIsIdempotentForOwner", s.completeIdempotent},
		{"StaleTokenRejected", s.staleTokenRejected},
		{"RetentionExpiry", s.retentionExpiry},
		{"ReleaseAfterFailure", s.releaseAfterFailure},
		{"ReleaseUncounted", s.releaseUncounted},
		{"DeliveryCounter", s.deliveryCounter},
		{"ClaimRetriedBySameToken", s.claimRetriedBySameToken},
		{"DueForDLQ", s.dueForDLQ},
		{"DeadLetteredAndReplay", s.deadLetteredAndReplay},
		{"ReplayIDKeptByEveryAcquisition", s.replayIDKeptByEveryAcquisition},
		{"ClaimRetriedBySameTokenStoresFingerprint", s.claimRetriedStoresFingerprint},
		{"ContextCancellation", s.contextCancellation},
		{"ScopeIsolation", s.scopeIsolation},
		{"LargeAndBinaryKeys", s.largeAndBinaryKeys},
		{"Fingerprint", s.fingerprint},
		{"InvalidInput", s.invalidInput},
		{"ReleasedRecordKeepsCounterUntilRetention", s.releasedKeepsCounter},
		{"ManyKeysConcurrently", s.manyKeysConcurrently},
		{"MixedCallsAtOnce", s.mixedCallsAtOnce},
		{"Reopen", s.reopen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if features.Parallel {
				t.Parallel()
			}
			c.fn(t)
		})
	}
}

type suite struct {
	newStore func(t *testing.T) dedup.Store
	f        Features
}

// unit scales a wait: long enough for stores with a coarse clock.
func (s *suite) unit() time.Duration {
	u := 100 * time.Millisecond
	if g := 50 * s.f.Granularity; g > u {
		u = g
	}
	return u
}

const long = time.Hour

func randomScope(t *testing.T) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if len(name) > 120 {
		name = name[len(name)-120:]
	}
	return "deduptest-" + hex.EncodeToString(b[:]) + "-" + name
}

func key(t *testing.T, id string) dedup.Key {
	return dedup.Key{Scope: randomScope(t), ID: id}
}

func req(lease, retention time.Duration) dedup.ClaimRequest {
	return dedup.ClaimRequest{Token: dedup.NewToken(), Lease: lease, Retention: retention}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustClaim(t *testing.T, st dedup.Store, k dedup.Key, r dedup.ClaimRequest, want dedup.Status) dedup.ClaimResult {
	t.Helper()
	res, err := st.Claim(ctxT(t), k, r)
	require.NoError(t, err, "Claim(%s)", k)
	require.Equal(t, want, res.Status, "Claim(%s) status", k)
	return res
}

func (s *suite) claimNewKey(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "event-1")
	res := mustClaim(t, st, k, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries)
	require.Nil(t, res.DueForDLQ)
	require.Empty(t, res.Fingerprint)
}

func (s *suite) concurrentClaims(t *testing.T) {
	st := s.newStore(t)
	const workers = 32
	for round := range 5 {
		k := key(t, fmt.Sprintf("twin-%d", round))
		var wg sync.WaitGroup
		var acquired, inProgress atomic.Int32
		start := make(chan struct{})
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				<-start
				res, err := st.Claim(ctxT(t), k, req(long, long))
				if err != nil {
					errs <- err
					return
				}
				switch res.Status {
				case dedup.StatusAcquired:
					acquired.Add(1)
				case dedup.StatusInProgress:
					inProgress.Add(1)
				default:
					errs <- fmt.Errorf("unexpected status %v", res.Status)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, int32(1), acquired.Load(), "exactly one of %d concurrent claims must win", workers)
		require.Equal(t, int32(workers-1), inProgress.Load())
	}
}

func (s *suite) leaseExpiryThenReclaim(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	k := key(t, "lease")
	first := req(2*u, long)
	mustClaim(t, st, k, first, dedup.StatusAcquired)
	res := mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	if !s.f.NoLeaseRemaining {
		require.Positive(t, res.LeaseRemaining)
		require.LessOrEqual(t, res.LeaseRemaining, 2*u+s.f.Granularity)
	}
	time.Sleep(3*u + s.f.Granularity)
	second := req(long, long)
	res = mustClaim(t, st, k, second, dedup.StatusAcquired)
	require.Equal(t, 2, res.Deliveries, "a takeover counts as a delivery")

	ctx := ctxT(t)
	require.ErrorIs(t, st.Complete(ctx, k, first.Token, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.Release(ctx, k, first.Token, true), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.Extend(ctx, k, first.Token, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.MarkDueForDLQ(ctx, k, first.Token, []byte("x")), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.MarkDeadLettered(ctx, k, first.Token, long), dedup.ErrLeaseLost)
	// The new owner is unaffected by the stale calls.
	mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	require.NoError(t, st.Complete(ctx, k, second.Token, long))
	mustClaim(t, st, k, req(long, long), dedup.StatusDone)
}

func (s *suite) extendKeepsLease(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	k := key(t, "extend")
	r := req(2*u, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	time.Sleep(u)
	require.NoError(t, st.Extend(ctxT(t), k, r.Token, long))
	time.Sleep(2*u + s.f.Granularity)
	mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long))
}

func (s *suite) extendAfterExpiryWithoutTakeover(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	k := key(t, "late-extend")
	r := req(u, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	time.Sleep(2*u + s.f.Granularity)
	require.NoError(t, st.Extend(ctxT(t), k, r.Token, long), "an expired lease nobody took over may be extended")
	mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
}

func (s *suite) completeThenDuplicate(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "done")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long))
	for range 3 {
		res := mustClaim(t, st, k, req(long, long), dedup.StatusDone)
		require.Equal(t, 1, res.Deliveries, "duplicates of a done event do not count")
	}
	// A replay marker does not reopen a done event.
	rr := req(long, long)
	rr.ReplayID = "replay-1"
	mustClaim(t, st, k, rr, dedup.StatusDone)
}

func (s *suite) completeIdempotent(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "idem")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long))
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long), "a retried Complete by the owner succeeds")
	require.ErrorIs(t, st.Extend(ctxT(t), k, r.Token, long), dedup.ErrLeaseLost, "a done record cannot be extended")
	require.ErrorIs(t, st.Release(ctxT(t), k, r.Token, true), dedup.ErrLeaseLost, "a done record cannot be released")
	mustClaim(t, st, k, req(long, long), dedup.StatusDone)
}

func (s *suite) staleTokenRejected(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	k := key(t, "stale")
	stranger := dedup.NewToken()
	// No record at all.
	require.ErrorIs(t, st.Complete(ctx, k, stranger, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.Release(ctx, k, stranger, true), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.Extend(ctx, k, stranger, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.MarkDeadLettered(ctx, k, stranger, long), dedup.ErrLeaseLost)
	// A record held by someone else.
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.ErrorIs(t, st.Complete(ctx, k, stranger, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.Release(ctx, k, stranger, false), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.Extend(ctx, k, stranger, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.MarkDueForDLQ(ctx, k, stranger, []byte("x")), dedup.ErrLeaseLost)
	require.ErrorIs(t, st.MarkDeadLettered(ctx, k, stranger, long), dedup.ErrLeaseLost)
	mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	require.NoError(t, st.Complete(ctx, k, r.Token, long))
}

func (s *suite) retentionExpiry(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	k := key(t, "retention")
	r := req(u, u)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, 2*u))
	mustClaim(t, st, k, req(long, long), dedup.StatusDone)
	time.Sleep(3*u + s.f.Granularity)
	res := mustClaim(t, st, k, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries, "an expired record is forgotten, counter included")

	// Dead-lettered records expire the same way.
	k2 := key(t, "retention-dl")
	r2 := req(u, u)
	mustClaim(t, st, k2, r2, dedup.StatusAcquired)
	require.NoError(t, st.MarkDeadLettered(ctxT(t), k2, r2.Token, 2*u))
	mustClaim(t, st, k2, req(long, long), dedup.StatusDeadLettered)
	time.Sleep(3*u + s.f.Granularity)
	mustClaim(t, st, k2, req(long, long), dedup.StatusAcquired)
}

func (s *suite) releaseAfterFailure(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "release")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.Release(ctxT(t), k, r.Token, true))
	require.NoError(t, st.Release(ctxT(t), k, r.Token, true), "a repeated Release by the same owner succeeds")
	r2 := req(long, long)
	res := mustClaim(t, st, k, r2, dedup.StatusAcquired)
	require.Equal(t, 2, res.Deliveries, "a counted release keeps the delivery")
	require.ErrorIs(t, st.Release(ctxT(t), k, r.Token, true), dedup.ErrLeaseLost, "the old owner cannot release the new claim")
	require.NoError(t, st.Complete(ctxT(t), k, r2.Token, long))
	mustClaim(t, st, k, req(long, long), dedup.StatusDone)
}

func (s *suite) releaseUncounted(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "uncounted")
	for range 3 {
		r := req(long, long)
		res := mustClaim(t, st, k, r, dedup.StatusAcquired)
		require.Equal(t, 1, res.Deliveries, "a release after cancellation does not count")
		require.NoError(t, st.Release(ctxT(t), k, r.Token, false))
	}
}

func (s *suite) deliveryCounter(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	k := key(t, "counter")
	for i := 1; i <= 4; i++ {
		r := req(long, long)
		res := mustClaim(t, st, k, r, dedup.StatusAcquired)
		require.Equal(t, i, res.Deliveries)
		require.NoError(t, st.Release(ctxT(t), k, r.Token, true))
	}
	// A crashed owner (no release) counts too once its lease is taken over.
	mustClaim(t, st, k, req(u, long), dedup.StatusAcquired)
	time.Sleep(2*u + s.f.Granularity)
	res := mustClaim(t, st, k, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 6, res.Deliveries)
	// In-progress nacks do not count.
	res = mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	require.Equal(t, 6, res.Deliveries)
}

func (s *suite) claimRetriedBySameToken(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "retried-claim")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	res := mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries, "a retried claim by the owner does not count again")
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long))
}

func (s *suite) dueForDLQ(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "due")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	note := []byte("{\"reason\":\"permanent\",\"bin\":\"\x00\xff\"}")
	require.NoError(t, st.MarkDueForDLQ(ctxT(t), k, r.Token, note))
	r2 := req(long, long)
	res := mustClaim(t, st, k, r2, dedup.StatusAcquired)
	require.Equal(t, note, res.DueForDLQ)
	require.Equal(t, 2, res.Deliveries)
	require.NoError(t, st.MarkDeadLettered(ctxT(t), k, r2.Token, long))
	require.NoError(t, st.MarkDeadLettered(ctxT(t), k, r2.Token, long), "idempotent for the owner")
	res = mustClaim(t, st, k, req(long, long), dedup.StatusDeadLettered)
	require.Nil(t, res.DueForDLQ)

	// A note outlives a takeover but not the next acquisition's own outcome.
	k2 := key(t, "due-then-release")
	r3 := req(long, long)
	mustClaim(t, st, k2, r3, dedup.StatusAcquired)
	require.NoError(t, st.MarkDueForDLQ(ctxT(t), k2, r3.Token, []byte("n")))
	r4 := req(long, long)
	res = mustClaim(t, st, k2, r4, dedup.StatusAcquired)
	require.Equal(t, []byte("n"), res.DueForDLQ)
	require.NoError(t, st.Release(ctxT(t), k2, r4.Token, true))
	res = mustClaim(t, st, k2, req(long, long), dedup.StatusAcquired)
	require.Nil(t, res.DueForDLQ, "a release clears the note")
}

func (s *suite) deadLetteredAndReplay(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	k := key(t, "replay")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.Release(ctx, k, r.Token, true))
	r = req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.MarkDeadLettered(ctx, k, r.Token, long))
	mustClaim(t, st, k, req(long, long), dedup.StatusDeadLettered)

	rp := req(long, long)
	rp.ReplayID = "replay-1"
	res := mustClaim(t, st, k, rp, dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries, "a replay restarts the delivery counter")
	// A twin of the same replay waits for it.
	twin := req(long, long)
	twin.ReplayID = "replay-1"
	mustClaim(t, st, k, twin, dedup.StatusInProgress)
	require.NoError(t, st.MarkDeadLettered(ctx, k, rp.Token, long))
	// The same replay delivered again is not admitted twice; a new one is.
	mustClaim(t, st, k, twin, dedup.StatusDeadLettered)
	rp2 := req(long, long)
	rp2.ReplayID = "replay-2"
	mustClaim(t, st, k, rp2, dedup.StatusAcquired)
	require.NoError(t, st.Complete(ctx, k, rp2.Token, long))
	rp3 := req(long, long)
	rp3.ReplayID = "replay-3"
	mustClaim(t, st, k, rp3, dedup.StatusDone)
}

// replayIDKeptByEveryAcquisition: a replay's ID is stored by whatever
// acquisition admits it, not only by one that reopens a dead-lettered
// record; otherwise, once that replay is dead-lettered, a copy of the same
// replay message would be admitted (and run) again.
func (s *suite) replayIDKeptByEveryAcquisition(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	replay := func(id string) dedup.ClaimRequest {
		r := req(long, long)
		r.ReplayID = id
		return r
	}
	// Each way acquires k with a claim carrying a replay ID (or, for the
	// last, after one) and returns the holder's request with that ID.
	ways := []struct {
		name    string
		acquire func(t *testing.T, k dedup.Key) dedup.ClaimRequest
	}{
		{"AbsentRecord", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			rp := replay("r-absent")
			res := mustClaim(t, st, k, rp, dedup.StatusAcquired)
			require.Equal(t, 1, res.Deliveries)
			return rp
		}},
		{"ExpiredRecord", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			r := req(u, u)
			mustClaim(t, st, k, r, dedup.StatusAcquired)
			require.NoError(t, st.MarkDeadLettered(ctxT(t), k, r.Token, u))
			time.Sleep(2*u + s.f.Granularity)
			rp := replay("r-expired")
			res := mustClaim(t, st, k, rp, dedup.StatusAcquired)
			require.Equal(t, 1, res.Deliveries, "an expired record is forgotten")
			return rp
		}},
		{"ReleasedRecord", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			r := req(long, long)
			mustClaim(t, st, k, r, dedup.StatusAcquired)
			require.NoError(t, st.Release(ctxT(t), k, r.Token, true))
			rp := replay("r-released")
			res := mustClaim(t, st, k, rp, dedup.StatusAcquired)
			require.Equal(t, 2, res.Deliveries)
			return rp
		}},
		{"RecordDueForDLQ", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			// The replay then dead-letters it without running the handler.
			r := req(long, long)
			mustClaim(t, st, k, r, dedup.StatusAcquired)
			require.NoError(t, st.MarkDueForDLQ(ctxT(t), k, r.Token, []byte("note")))
			rp := replay("r-due")
			res := mustClaim(t, st, k, rp, dedup.StatusAcquired)
			require.Equal(t, []byte("note"), res.DueForDLQ)
			return rp
		}},
		{"TakenOverRecord", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			mustClaim(t, st, k, req(u, long), dedup.StatusAcquired)
			time.Sleep(2*u + s.f.Granularity)
			rp := replay("r-takeover")
			res := mustClaim(t, st, k, rp, dedup.StatusAcquired)
			require.Equal(t, 2, res.Deliveries)
			return rp
		}},
		{"ClaimRetriedBySameToken", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			r := req(long, long)
			mustClaim(t, st, k, r, dedup.StatusAcquired)
			r.ReplayID = "r-retried"
			res := mustClaim(t, st, k, r, dedup.StatusAcquired)
			require.Equal(t, 1, res.Deliveries, "a retried claim does not count again")
			return r
		}},
		{"LaterAcquisitionWithoutReplayID", func(t *testing.T, k dedup.Key) dedup.ClaimRequest {
			// A later acquisition without a replay ID keeps the stored one.
			rp := replay("r-kept")
			mustClaim(t, st, k, rp, dedup.StatusAcquired)
			require.NoError(t, st.Release(ctxT(t), k, rp.Token, true))
			plain := req(long, long)
			res := mustClaim(t, st, k, plain, dedup.StatusAcquired)
			require.Equal(t, 2, res.Deliveries)
			plain.ReplayID = rp.ReplayID // for the checks: the claim carried none
			return plain
		}},
	}
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			k := key(t, "replay")
			held := w.acquire(t, k)
			require.NoError(t, st.MarkDeadLettered(ctxT(t), k, held.Token, long))
			res, err := st.Claim(ctxT(t), k, replay(held.ReplayID))
			require.NoError(t, err)
			require.Equal(t, dedup.StatusDeadLettered, res.Status,
				"a copy of replay %q was admitted again after that replay was dead-lettered", held.ReplayID)
			next := replay(held.ReplayID + "-next")
			res = mustClaim(t, st, k, next, dedup.StatusAcquired)
			require.Equal(t, 1, res.Deliveries, "a new replay restarts the counter")
			require.NoError(t, st.Complete(ctxT(t), k, next.Token, long))
		})
	}
}

// claimRetriedStoresFingerprint: a retried claim by the owner's token is an
// acquiring claim, so it stores its fingerprint when the record has none.
func (s *suite) claimRetriedStoresFingerprint(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "retried-fp")
	fp1 := bytes.Repeat([]byte{1}, 32)
	fp2 := bytes.Repeat([]byte{2}, 32)
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	r.Fingerprint = fp1
	res := mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries, "a retried claim does not count again")
	require.Empty(t, res.Fingerprint, "the record had no fingerprint before the retried claim")
	res = mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	require.Equal(t, fp1, res.Fingerprint, "a retried claim stores its fingerprint when the record has none")
	// A stored one is never overwritten, by a retried claim either.
	r.Fingerprint = fp2
	res = mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.Equal(t, fp1, res.Fingerprint)
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long))
	res = mustClaim(t, st, k, req(long, long), dedup.StatusDone)
	require.Equal(t, fp1, res.Fingerprint)
}

func (s *suite) contextCancellation(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "cancel")
	r := req(long, long)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := st.Claim(ctx, key(t, "cancel-new"), req(long, long))
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, st.Extend(ctx, k, r.Token, long), context.Canceled)
	require.ErrorIs(t, st.Complete(ctx, k, r.Token, long), context.Canceled)
	require.ErrorIs(t, st.Release(ctx, k, r.Token, true), context.Canceled)
	require.ErrorIs(t, st.MarkDueForDLQ(ctx, k, r.Token, []byte("x")), context.Canceled)
	require.ErrorIs(t, st.MarkDeadLettered(ctx, k, r.Token, long), context.Canceled)
	// Nothing changed: the claim is still held and completes.
	mustClaim(t, st, k, req(long, long), dedup.StatusInProgress)
	require.NoError(t, st.Complete(ctxT(t), k, r.Token, long))
	// A claim with an expired deadline fails too and leaves nothing behind.
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	k2 := key(t, "deadline")
	_, err = st.Claim(dctx, k2, req(long, long))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	res := mustClaim(t, st, k2, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries)
}

func (s *suite) scopeIsolation(t *testing.T) {
	st := s.newStore(t)
	scope := randomScope(t)
	a := dedup.Key{Scope: scope + "-a", ID: "same-id"}
	b := dedup.Key{Scope: scope + "-b", ID: "same-id"}
	ra := req(long, long)
	mustClaim(t, st, a, ra, dedup.StatusAcquired)
	require.NoError(t, st.Complete(ctxT(t), a, ra.Token, long))
	mustClaim(t, st, b, req(long, long), dedup.StatusAcquired)
	mustClaim(t, st, a, req(long, long), dedup.StatusDone)
	// Keys that naive concatenation would confuse.
	c := dedup.Key{Scope: scope + ":x", ID: "y"}
	d := dedup.Key{Scope: scope, ID: "x:y"}
	e := dedup.Key{Scope: scope, ID: ":x:y"}
	mustClaim(t, st, c, req(long, long), dedup.StatusAcquired)
	mustClaim(t, st, d, req(long, long), dedup.StatusAcquired)
	mustClaim(t, st, e, req(long, long), dedup.StatusAcquired)
}

func (s *suite) largeAndBinaryKeys(t *testing.T) {
	st := s.newStore(t)
	scope := randomScope(t)
	big := bytes.Repeat([]byte{0x00, 0xff, 'a', '\n', 0xc3}, dedup.MaxIDLen/5)
	big = append(big, make([]byte, dedup.MaxIDLen-len(big))...)
	ids := []string{
		string(big),
		string(big[:len(big)-1]) + "\x01",
		"\x00",
		"\x00\x00",
		"\xff\xfe invalid utf-8",
		"emoji 🎉 and 'quotes\" and %s and \\",
		"UPPER", "upper",
		"trailing space ",
		"trailing space",
	}
	tokens := make([]dedup.Token, len(ids))
	for i, id := range ids {
		r := req(long, long)
		tokens[i] = r.Token
		res := mustClaim(t, st, dedup.Key{Scope: scope, ID: id}, r, dedup.StatusAcquired)
		require.Equal(t, 1, res.Deliveries, "id %d must be a distinct key", i)
	}
	for i, id := range ids {
		k := dedup.Key{Scope: scope, ID: id}
		require.NoError(t, st.Complete(ctxT(t), k, tokens[i], long))
		mustClaim(t, st, k, req(long, long), dedup.StatusDone)
	}
}

func (s *suite) fingerprint(t *testing.T) {
	st := s.newStore(t)
	k := key(t, "fp")
	fp1 := bytes.Repeat([]byte{1}, 32)
	fp2 := bytes.Repeat([]byte{2}, 32)
	r := req(long, long)
	r.Fingerprint = fp1
	res := mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.Empty(t, res.Fingerprint)
	other := req(long, long)
	other.Fingerprint = fp2
	res = mustClaim(t, st, k, other, dedup.StatusInProgress)
	require.Equal(t, fp1, res.Fingerprint)
	require.NoError(t, st.Release(ctxT(t), k, r.Token, true))
	res = mustClaim(t, st, k, other, dedup.StatusAcquired)
	require.Equal(t, fp1, res.Fingerprint, "the first fingerprint is kept")
	require.NoError(t, st.Complete(ctxT(t), k, other.Token, long))
	res = mustClaim(t, st, k, req(long, long), dedup.StatusDone)
	require.Equal(t, fp1, res.Fingerprint)

	// A record first claimed without a fingerprint takes the first one
	// offered by a claim that acquires; a claim that does not acquire
	// changes nothing.
	k2 := key(t, "fp-late")
	r2 := req(long, long)
	mustClaim(t, st, k2, r2, dedup.StatusAcquired)
	bystander := req(long, long)
	bystander.Fingerprint = fp1
	res = mustClaim(t, st, k2, bystander, dedup.StatusInProgress)
	require.Empty(t, res.Fingerprint)
	require.NoError(t, st.Release(ctxT(t), k2, r2.Token, true))
	r3 := req(long, long)
	r3.Fingerprint = fp2
	res = mustClaim(t, st, k2, r3, dedup.StatusAcquired)
	require.Empty(t, res.Fingerprint)
	require.NoError(t, st.Complete(ctxT(t), k2, r3.Token, long))
	res = mustClaim(t, st, k2, req(long, long), dedup.StatusDone)
	require.Equal(t, fp2, res.Fingerprint)
}

func (s *suite) invalidInput(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	scope := randomScope(t)
	bad := []dedup.Key{
		{Scope: scope, ID: ""},
		{Scope: "", ID: "x"},
		{Scope: scope, ID: strings.Repeat("x", dedup.MaxIDLen+1)},
		{Scope: strings.Repeat("s", dedup.MaxScopeLen+1), ID: "x"},
	}
	for _, k := range bad {
		_, err := st.Claim(ctx, k, req(long, long))
		require.ErrorIs(t, err, dedup.ErrInvalidKey, "Claim(%q)", k.String())
		require.ErrorContains(t, err, k.String(), "the error names the key")
		require.ErrorIs(t, st.Complete(ctx, k, dedup.NewToken(), long), dedup.ErrInvalidKey)
	}
	k := key(t, "bad-request")
	for _, r := range []dedup.ClaimRequest{
		{Token: "", Lease: long, Retention: long},
		{Token: dedup.NewToken(), Lease: 0, Retention: long},
		{Token: dedup.NewToken(), Lease: long, Retention: time.Second},
		{Token: dedup.NewToken(), Lease: long, Retention: long, Fingerprint: make([]byte, dedup.MaxFingerprintLen+1)},
	} {
		_, err := st.Claim(ctx, k, r)
		require.ErrorIs(t, err, dedup.ErrInvalidRequest)
	}
	// None of the rejected requests left a record behind.
	res := mustClaim(t, st, k, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries)
}

func (s *suite) releasedKeepsCounter(t *testing.T) {
	st := s.newStore(t)
	u := s.unit()
	k := key(t, "released-retention")
	// Retention is 6 units, so that a loaded machine's slow store calls
	// cannot eat the margin between the lease (1 unit) and the retention.
	r := req(u, 6*u)
	mustClaim(t, st, k, r, dedup.StatusAcquired)
	require.NoError(t, st.Release(ctxT(t), k, r.Token, true))
	time.Sleep(u + s.f.Granularity)
	r2 := req(u, 6*u)
	res := mustClaim(t, st, k, r2, dedup.StatusAcquired)
	require.Equal(t, 2, res.Deliveries, "the counter outlives the lease")
	require.NoError(t, st.Release(ctxT(t), k, r2.Token, true))
	time.Sleep(7*u + s.f.Granularity)
	res = mustClaim(t, st, k, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 1, res.Deliveries, "the counter is forgotten after the claim's retention")
}

func (s *suite) manyKeysConcurrently(t *testing.T) {
	st := s.newStore(t)
	scope := randomScope(t)
	const keys, twins = 200, 4
	var effects sync.Map
	var wg sync.WaitGroup
	errs := make(chan error, keys*twins)
	for i := range keys {
		for range twins {
			wg.Go(func() {
				k := dedup.Key{Scope: scope, ID: fmt.Sprintf("k%d", i)}
				for {
					r := req(long, long)
					res, err := st.Claim(ctxT(t), k, r)
					if err != nil {
						errs <- err
						return
					}
					switch res.Status {
					case dedup.StatusAcquired:
						n, _ := effects.LoadOrStore(i, new(atomic.Int32))
						n.(*atomic.Int32).Add(1)
						if err := st.Complete(ctxT(t), k, r.Token, long); err != nil {
							errs <- err
						}
						return
					case dedup.StatusDone:
						return
					case dedup.StatusInProgress:
						time.Sleep(time.Millisecond)
					default:
						errs <- fmt.Errorf("unexpected status %v", res.Status)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i := range keys {
		n, ok := effects.Load(i)
		require.True(t, ok, "key %d never acquired", i)
		require.Equal(t, int32(1), n.(*atomic.Int32).Load(), "key %d acquired more than once", i)
	}
}

// mixedCallsAtOnce releases many calls of different kinds at the same
// moment, as concurrent handlers make them: a store that sends them together
// (one multi-row statement, one pipeline) must still answer each on its
// own, fenced by its own token, and a key claimed twice at once must have
// one winner, the other call seeing it in progress exactly as if it had
// come second.
func (s *suite) mixedCallsAtOnce(t *testing.T) {
	st := s.newStore(t)
	scope := randomScope(t)
	k := func(id string) dedup.Key { return dedup.Key{Scope: scope, ID: id} }
	lease := 10 * s.unit()
	done, held := k("done"), k("held")
	rd := req(lease, long)
	mustClaim(t, st, done, rd, dedup.StatusAcquired)
	require.NoError(t, st.Complete(ctxT(t), done, rd.Token, long))
	mustClaim(t, st, held, req(long, long), dedup.StatusAcquired)

	for round := range 3 {
		const fresh, twins, dups = 24, 4, 8
		type answer struct {
			id  string
			r   dedup.ClaimRequest
			res dedup.ClaimResult
			err error
		}
		var calls []func() answer
		claim := func(id string, fp []byte) {
			r := req(lease, long)
			r.Fingerprint = fp
			calls = append(calls, func() answer {
				res, err := st.Claim(ctxT(t), k(id), r)
				return answer{id, r, res, err}
			})
		}
		for i := range fresh {
			claim(fmt.Sprintf("fresh-%d-%d", round, i), []byte{byte(i)})
		}
		twin := fmt.Sprintf("twin-%d", round)
		for range twins {
			claim(twin, []byte("twin"))
		}
		for range dups {
			claim("done", nil)
			claim("held", nil)
		}
		answers := make([]answer, len(calls))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, call := range calls {
			wg.Go(func() {
				<-start
				answers[i] = call()
			})
		}
		close(start)
		wg.Wait()

		var winners []answer
		for _, a := range answers {
			require.NoError(t, a.err, "Claim(%s)", a.id)
			switch {
			case a.id == "done":
				require.Equal(t, dedup.StatusDone, a.res.Status, "a done key, claimed among others")
			case a.id == "held":
				require.Equal(t, dedup.StatusInProgress, a.res.Status, "a held key, claimed among others")
				if !s.f.NoLeaseRemaining {
					require.Positive(t, a.res.LeaseRemaining)
				}
			case a.id == twin && a.res.Status == dedup.StatusInProgress:
				require.Equal(t, 1, a.res.Deliveries, "a twin sees the winner's claim")
				require.Equal(t, []byte("twin"), a.res.Fingerprint, "a twin sees the winner's fingerprint")
				if !s.f.NoLeaseRemaining {
					require.Positive(t, a.res.LeaseRemaining)
					require.LessOrEqual(t, a.res.LeaseRemaining, lease)
				}
			default:
				require.Equal(t, dedup.StatusAcquired, a.res.Status, "Claim(%s)", a.id)
				require.Equal(t, 1, a.res.Deliveries, "Claim(%s)", a.id)
				require.Empty(t, a.res.Fingerprint, "Claim(%s) of a new key", a.id)
				winners = append(winners, a)
			}
		}
		require.Len(t, winners, fresh+1, "every fresh key and one of the twins acquired")

		// The winners complete at once, and one stale token among them is
		// refused alone.
		errs := make([]error, len(winners)+1)
		start = make(chan struct{})
		for i, a := range winners {
			wg.Go(func() {
				<-start
				errs[i] = completeRetried(t, st, k(a.id), a.r.Token)
			})
		}
		wg.Go(func() {
			<-start
			errs[len(winners)] = st.Complete(ctxT(t), held, dedup.NewToken(), long)
		})
		close(start)
		wg.Wait()
		for i, a := range winners {
			require.NoError(t, errs[i], "Complete(%s) beside a stale token", a.id)
			mustClaim(t, st, k(a.id), req(lease, long), dedup.StatusDone)
		}
		require.ErrorIs(t, errs[len(winners)], dedup.ErrLeaseLost, "a stale token among others")
	}
}

// completeRetried completes k for token, retrying (Complete is idempotent
// for its token) after an error that is not a lost lease, as a caller does:
// a database at SERIALIZABLE may refuse a statement under concurrency.
func completeRetried(t *testing.T, st dedup.Store, k dedup.Key, token dedup.Token) error {
	var err error
	for range 5 {
		if err = st.Complete(ctxT(t), k, token, long); err == nil || errors.Is(err, dedup.ErrLeaseLost) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// reopen: a second instance opened on the same backend sees everything the
// first left: counters, outcomes, held claims with their token fencing.
func (s *suite) reopen(t *testing.T) {
	if s.f.Reopen == nil {
		t.Skip("Features.Reopen is nil: the store is not opened a second time on its backend")
	}
	st := s.newStore(t)
	ctx := ctxT(t)
	fp := bytes.Repeat([]byte{7}, 32)
	note := []byte("{\"reason\":\"permanent\",\"bin\":\"\x00\xff\"}")

	// Done after three deliveries, with a fingerprint.
	kDone := key(t, "reopen-done")
	for range 2 {
		r := req(long, long)
		mustClaim(t, st, kDone, r, dedup.StatusAcquired)
		require.NoError(t, st.Release(ctx, kDone, r.Token, true))
	}
	r := req(long, long)
	r.Fingerprint = fp
	res := mustClaim(t, st, kDone, r, dedup.StatusAcquired)
	require.Equal(t, 3, res.Deliveries)
	require.NoError(t, st.Complete(ctx, kDone, r.Token, long))

	// Dead-lettered, replayed once, and dead-lettered again.
	kDL := key(t, "reopen-dead-lettered")
	r = req(long, long)
	mustClaim(t, st, kDL, r, dedup.StatusAcquired)
	require.NoError(t, st.MarkDeadLettered(ctx, kDL, r.Token, long))
	rp := req(long, long)
	rp.ReplayID = "reopen-replay-1"
	mustClaim(t, st, kDL, rp, dedup.StatusAcquired)
	require.NoError(t, st.MarkDeadLettered(ctx, kDL, rp.Token, long))

	// Held by a live claim.
	kHeld := key(t, "reopen-held")
	held := req(long, long)
	held.Fingerprint = fp
	mustClaim(t, st, kHeld, held, dedup.StatusAcquired)

	// Released twice with the deliveries kept.
	kRel := key(t, "reopen-released")
	for range 2 {
		r := req(long, long)
		mustClaim(t, st, kRel, r, dedup.StatusAcquired)
		require.NoError(t, st.Release(ctx, kRel, r.Token, true))
	}

	// Due for the DLQ.
	kDue := key(t, "reopen-due")
	r = req(long, long)
	mustClaim(t, st, kDue, r, dedup.StatusAcquired)
	require.NoError(t, st.MarkDueForDLQ(ctx, kDue, r.Token, note))

	fresh := s.f.Reopen(t, st)
	require.NotNil(t, fresh, "Features.Reopen returned nil")

	res = mustClaim(t, fresh, kDone, req(long, long), dedup.StatusDone)
	require.Equal(t, 3, res.Deliveries, "the reopened store sees the delivery counter")
	require.Equal(t, fp, res.Fingerprint, "the reopened store sees the fingerprint")

	res = mustClaim(t, fresh, kDL, req(long, long), dedup.StatusDeadLettered)
	require.Equal(t, 1, res.Deliveries)
	again := req(long, long)
	again.ReplayID = rp.ReplayID
	mustClaim(t, fresh, kDL, again, dedup.StatusDeadLettered)

	res = mustClaim(t, fresh, kHeld, req(long, long), dedup.StatusInProgress)
	require.Equal(t, 1, res.Deliveries)
	require.Equal(t, fp, res.Fingerprint)
	if !s.f.NoLeaseRemaining {
		require.Positive(t, res.LeaseRemaining, "the reopened store sees the lease")
	}
	stranger := dedup.NewToken()
	require.ErrorIs(t, fresh.Extend(ctx, kHeld, stranger, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, fresh.Complete(ctx, kHeld, stranger, long), dedup.ErrLeaseLost)
	require.ErrorIs(t, fresh.Release(ctx, kHeld, stranger, true), dedup.ErrLeaseLost)
	require.ErrorIs(t, fresh.MarkDeadLettered(ctx, kHeld, stranger, long), dedup.ErrLeaseLost)
	require.NoError(t, fresh.Extend(ctx, kHeld, held.Token, long), "the owner's token still holds the claim")
	require.NoError(t, fresh.Complete(ctx, kHeld, held.Token, long))
	require.NoError(t, st.Complete(ctx, kHeld, held.Token, long), "idempotent across instances")
	mustClaim(t, st, kHeld, req(long, long), dedup.StatusDone)

	res = mustClaim(t, fresh, kRel, req(long, long), dedup.StatusAcquired)
	require.Equal(t, 3, res.Deliveries, "the reopened store continues the delivery counter")

	res = mustClaim(t, fresh, kDue, req(long, long), dedup.StatusAcquired)
	require.Equal(t, note, res.DueForDLQ, "the reopened store returns the due note")
	require.Equal(t, 2, res.Deliveries)
}
