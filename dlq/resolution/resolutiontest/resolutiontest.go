package resolutiontest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/resolution"
)

// Features describes a store under test.
type Features struct {
	// Granularity is the resolution of the store's clock (1 ms for Redis,
	// 1 µs for SQL). Lease waits are scaled up from it. Defaults to 1 ms.
	Granularity time.Duration
	// Parallel runs the cases with t.Parallel; each case uses its own
	// random DLQ names.
	Parallel bool
	// Reopen returns a second, freshly opened instance of st on the same
	// backend (a new client, the same server, table or prefix), as another
	// operator's process would open it. Nil skips the "Reopen" case: right
	// for a store that keeps its records in the process.
	Reopen func(t *testing.T, st resolution.Store) resolution.Store
}

// Run runs the conformance suite against the stores newStore returns (one
// call per case; it may return the same store each time and should
// register cleanup with t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) resolution.Store, f Features) {
	t.Helper()
	if f.Granularity <= 0 {
		f.Granularity = time.Millisecond
	}
	s := &suite{newStore: newStore, f: f}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"BeginNewEntry", s.beginNew},
		{"ConcurrentBeginsOneWinner", s.concurrentBegins},
		{"HeldByAnother", s.heldByAnother},
		{"LeaseExpiryTakeover", s.leaseExpiryTakeover},
		{"FinishRecordsOutcomeByAndTime", s.finishRecords},
		{"FinishIsIdempotentForItsToken", s.finishIdempotent},
		{"FinishAfterLeaseRanOutUntakenSucceeds", s.finishAfterExpiry},
		{"Abort", s.abort},
		{"DLQIsolation", s.dlqIsolation},
		{"ResolutionsReadsOneDLQ", s.resolutionsBatch},
		{"ReadsChangeNothing", s.readsChangeNothing},
		{"InvalidInput", s.invalidInput},
		{"ContextCancelled", s.contextCancelled},
		{"UnusualNames", s.unusualNames},
		{"Reopen", s.reopen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if f.Parallel {
				t.Parallel()
			}
			c.fn(t)
		})
	}
}

type suite struct {
	newStore func(t *testing.T) resolution.Store
	f        Features
}

// lease is a lease long enough for a case's calls to finish within it.
func (s *suite) lease() time.Duration { return max(time.Minute, 1000*s.f.Granularity) }

// short is a lease that runs out within wait.
func (s *suite) short() time.Duration { return max(150*time.Millisecond, 100*s.f.Granularity) }

// wait outlasts short, with margin for clock granularity.
func (s *suite) wait() { time.Sleep(2*s.short() + 10*s.f.Granularity) }

func dlqName(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "rt-" + hex.EncodeToString(b[:]) + ".dlq"
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func begin(t *testing.T, st resolution.Store, k resolution.Key, by string, lease time.Duration, want resolution.Status) resolution.Begun {
	t.Helper()
	b, err := st.Begin(ctxT(t), k, by, lease)
	require.NoError(t, err)
	require.Equal(t, want, b.Status, "Begin(%v) by %s", k, by)
	return b
}

// closeTo checks that a store time is the local time give or take a minute
// (the store's clock is its own).
func closeTo(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	require.False(t, got.IsZero(), "%s is set", what)
	require.WithinDuration(t, want, got, time.Minute, what)
}

func (s *suite) beginNew(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e1"}
	b := begin(t, st, k, "alice", s.lease(), resolution.Acquired)
	require.NotEmpty(t, b.Token)
	require.Equal(t, "alice", b.Record.By)
	closeTo(t, time.Now(), b.Record.At, "hold start")
	require.True(t, b.Record.LeaseUntil.After(b.Record.At), "lease runs out after it began")
	got, err := st.Resolutions(ctxT(t), k.DLQ)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, resolution.InProgress, got["e1"].Status)
	require.Equal(t, "alice", got["e1"].By)
}

func (s *suite) concurrentBegins(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "contended"}
	const n = 16
	var wg sync.WaitGroup
	results := make([]resolution.Begun, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Begin(ctxT(t), k, fmt.Sprintf("op-%d", i), s.lease())
		}()
	}
	wg.Wait()
	winner := -1
	for i := range n {
		require.NoError(t, errs[i])
		if results[i].Status == resolution.Acquired {
			require.Equal(t, -1, winner, "two begins won: %d and %d", winner, i)
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "one begin wins")
	for i := range n {
		if i != winner {
			require.Equal(t, resolution.InProgress, results[i].Status)
			require.Equal(t, fmt.Sprintf("op-%d", winner), results[i].Record.By, "the loser sees who holds the entry")
			require.Empty(t, results[i].Token)
		}
	}
}

func (s *suite) heldByAnother(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	a := begin(t, st, k, "alice", s.lease(), resolution.Acquired)
	b := begin(t, st, k, "bob", s.lease(), resolution.InProgress)
	require.Equal(t, "alice", b.Record.By)
	require.WithinDuration(t, a.Record.LeaseUntil, b.Record.LeaseUntil, time.Millisecond, "bob sees alice's lease")
	_, err := st.Finish(ctxT(t), k, "not-the-token", resolution.Replayed)
	require.ErrorIs(t, err, resolution.ErrLeaseLost)
	require.NoError(t, st.Abort(ctxT(t), k, "not-the-token"))
	begin(t, st, k, "bob", s.lease(), resolution.InProgress)
}

func (s *suite) leaseExpiryTakeover(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	a := begin(t, st, k, "alice", s.short(), resolution.Acquired)
	s.wait()
	b := begin(t, st, k, "bob", s.lease(), resolution.Acquired)
	require.NotEqual(t, a.Token, b.Token)
	_, err := st.Finish(ctxT(t), k, a.Token, resolution.Replayed)
	require.ErrorIs(t, err, resolution.ErrLeaseLost, "the old token is fenced off")
	require.NoError(t, st.Abort(ctxT(t), k, a.Token))
	rec, err := st.Finish(ctxT(t), k, b.Token, resolution.Parked)
	require.NoError(t, err)
	require.Equal(t, "bob", rec.By)
	require.Equal(t, resolution.Parked, rec.Outcome)
}

func (s *suite) finishRecords(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	for _, o := range []resolution.Outcome{resolution.Replayed, resolution.Parked, resolution.Purged} {
		k.EntryID = string(o)
		b := begin(t, st, k, "carol@ops-1", s.lease(), resolution.Acquired)
		rec, err := st.Finish(ctxT(t), k, b.Token, o)
		require.NoError(t, err)
		require.Equal(t, resolution.Resolved, rec.Status)
		require.Equal(t, o, rec.Outcome)
		require.Equal(t, "carol@ops-1", rec.By)
		closeTo(t, time.Now(), rec.At, "resolution time")
		again := begin(t, st, k, "dave", s.lease(), resolution.Resolved)
		require.Empty(t, again.Token)
		require.Equal(t, o, again.Record.Outcome)
		require.Equal(t, "carol@ops-1", again.Record.By)
		require.WithinDuration(t, rec.At, again.Record.At, time.Millisecond)
	}
	got, err := st.Resolutions(ctxT(t), k.DLQ)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for id, r := range got {
		require.Equal(t, resolution.Resolved, r.Status)
		require.Equal(t, resolution.Outcome(id), r.Outcome)
		require.Equal(t, "carol@ops-1", r.By)
	}
}

func (s *suite) finishIdempotent(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	b := begin(t, st, k, "alice", s.lease(), resolution.Acquired)
	r1, err := st.Finish(ctxT(t), k, b.Token, resolution.Purged)
	require.NoError(t, err)
	r2, err := st.Finish(ctxT(t), k, b.Token, resolution.Purged)
	require.NoError(t, err, "a retried finish (a lost answer) succeeds")
	require.Equal(t, r1.Outcome, r2.Outcome)
	require.WithinDuration(t, r1.At, r2.At, time.Millisecond, "the record is unchanged")
	require.NoError(t, st.Abort(ctxT(t), k, b.Token))
	begin(t, st, k, "bob", s.lease(), resolution.Resolved)
}

func (s *suite) finishAfterExpiry(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	b := begin(t, st, k, "alice", s.short(), resolution.Acquired)
	s.wait()
	rec, err := st.Finish(ctxT(t), k, b.Token, resolution.Replayed)
	require.NoError(t, err, "nobody took the entry over: the token still holds it")
	require.Equal(t, resolution.Resolved, rec.Status)
}

func (s *suite) abort(t *testing.T) {
	st := s.newStore(t)
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	a := begin(t, st, k, "alice", s.lease(), resolution.Acquired)
	require.NoError(t, st.Abort(ctxT(t), k, a.Token))
	got, err := st.Resolutions(ctxT(t), k.DLQ)
	require.NoError(t, err)
	require.Empty(t, got, "an aborted entry is unresolved")
	b := begin(t, st, k, "bob", s.lease(), resolution.Acquired)
	_, err = st.Finish(ctxT(t), k, a.Token, resolution.Replayed)
	require.ErrorIs(t, err, resolution.ErrLeaseLost)
	require.NoError(t, st.Abort(ctxT(t), k, a.Token))
	begin(t, st, k, "carol", s.lease(), resolution.InProgress)
	_, err = st.Finish(ctxT(t), k, b.Token, resolution.Replayed)
	require.NoError(t, err)
	require.NoError(t, st.Abort(ctxT(t), k, b.Token), "aborting a resolved entry changes nothing")
	begin(t, st, k, "carol", s.lease(), resolution.Resolved)
}

func (s *suite) dlqIsolation(t *testing.T) {
	st := s.newStore(t)
	a := resolution.Key{DLQ: dlqName(t), EntryID: "shared-id"}
	b := resolution.Key{DLQ: dlqName(t), EntryID: "shared-id"}
	ba := begin(t, st, a, "alice", s.lease(), resolution.Acquired)
	_, err := st.Finish(ctxT(t), a, ba.Token, resolution.Replayed)
	require.NoError(t, err)
	got, err := st.Resolutions(ctxT(t), b.DLQ)
	require.NoError(t, err)
	require.Empty(t, got, "another DLQ's entry with the same ID stays unresolved")
	bb := begin(t, st, b, "bob", s.lease(), resolution.Acquired)
	_, err = st.Finish(ctxT(t), b, bb.Token, resolution.Purged)
	require.NoError(t, err)
	for k, want := range map[resolution.Key]resolution.Outcome{a: resolution.Replayed, b: resolution.Purged} {
		got, err := st.Resolutions(ctxT(t), k.DLQ)
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.Equal(t, want, got["shared-id"].Outcome)
	}
}

func (s *suite) resolutionsBatch(t *testing.T) {
	st := s.newStore(t)
	dlq, other := dlqName(t), dlqName(t)
	ctx := ctxT(t)
	want := map[string]resolution.Record{}
	outcomes := []resolution.Outcome{resolution.Replayed, resolution.Parked, resolution.Purged}
	var expired []string
	for i := range 300 {
		k := resolution.Key{DLQ: dlq, EntryID: fmt.Sprintf("entry-%03d", i)}
		switch i % 4 {
		case 0, 1: // resolved
			b := begin(t, st, k, "op", s.lease(), resolution.Acquired)
			rec, err := st.Finish(ctx, k, b.Token, outcomes[i%3])
			require.NoError(t, err)
			want[k.EntryID] = rec
		case 2: // held
			b := begin(t, st, k, "holder", s.lease(), resolution.Acquired)
			want[k.EntryID] = b.Record
		case 3: // held briefly: runs out before the read
			begin(t, st, k, "gone", s.short(), resolution.Acquired)
			expired = append(expired, k.EntryID)
		}
		ob := begin(t, st, resolution.Key{DLQ: other, EntryID: k.EntryID}, "elsewhere", s.lease(), resolution.Acquired)
		_, err := st.Finish(ctx, resolution.Key{DLQ: other, EntryID: k.EntryID}, ob.Token, resolution.Purged)
		require.NoError(t, err)
	}
	s.wait()
	got, err := st.Resolutions(ctx, dlq)
	require.NoError(t, err)
	require.Len(t, got, len(want), "every live record of the DLQ, nothing of another, no run-out hold")
	for id, w := range want {
		g, ok := got[id]
		require.True(t, ok, "record of %s", id)
		require.Equal(t, w.Status, g.Status, id)
		require.Equal(t, w.Outcome, g.Outcome, id)
		require.Equal(t, w.By, g.By, id)
		require.WithinDuration(t, w.At, g.At, time.Millisecond, id)
	}
	for _, id := range expired {
		require.NotContains(t, got, id, "a hold whose lease ran out is unresolved")
	}
	empty, err := st.Resolutions(ctx, dlqName(t))
	require.NoError(t, err)
	require.Empty(t, empty)
}

func (s *suite) readsChangeNothing(t *testing.T) {
	st := s.newStore(t)
	dlq := dlqName(t)
	ctx := ctxT(t)
	held := resolution.Key{DLQ: dlq, EntryID: "held"}
	ran := resolution.Key{DLQ: dlq, EntryID: "ran-out"}
	hb := begin(t, st, held, "alice", s.lease(), resolution.Acquired)
	rb := begin(t, st, ran, "bob", s.short(), resolution.Acquired)
	s.wait()
	for range 5 {
		got, err := st.Resolutions(ctx, dlq)
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.WithinDuration(t, hb.Record.LeaseUntil, got["held"].LeaseUntil, time.Millisecond, "reading extends no lease")
	}
	// The run-out hold was not cleaned up by the reads: its token still
	// finishes it (nobody took it over).
	_, err := st.Finish(ctx, ran, rb.Token, resolution.Replayed)
	require.NoError(t, err, "a read removed or changed a run-out hold")
	_, err = st.Finish(ctx, held, hb.Token, resolution.Purged)
	require.NoError(t, err)
}

func (s *suite) invalidInput(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	dlq := dlqName(t)
	bad := []resolution.Key{
		{DLQ: "", EntryID: "e"},
		{DLQ: dlq, EntryID: ""},
		{DLQ: dlq, EntryID: strings.Repeat("x", resolution.MaxLen+1)},
		{DLQ: dlq, EntryID: "nul\x00"},
		{DLQ: dlq, EntryID: "\xff"},
	}
	for _, k := range bad {
		_, err := st.Begin(ctx, k, "op", s.lease())
		require.ErrorIs(t, err, resolution.ErrInvalid, "%q", k)
		_, err = st.Finish(ctx, k, "tok", resolution.Replayed)
		require.ErrorIs(t, err, resolution.ErrInvalid, "%q", k)
		require.ErrorIs(t, st.Abort(ctx, k, "tok"), resolution.ErrInvalid, "%q", k)
	}
	_, err := st.Resolutions(ctx, "")
	require.ErrorIs(t, err, resolution.ErrInvalid)
	k := resolution.Key{DLQ: dlq, EntryID: "e"}
	_, err = st.Begin(ctx, k, "op", 0)
	require.ErrorIs(t, err, resolution.ErrInvalid)
	_, err = st.Begin(ctx, k, strings.Repeat("o", resolution.MaxLen+1), s.lease())
	require.ErrorIs(t, err, resolution.ErrInvalid)
	b := begin(t, st, k, "op", s.lease(), resolution.Acquired)
	_, err = st.Finish(ctx, k, b.Token, "forgotten")
	require.ErrorIs(t, err, resolution.ErrInvalid)
	_, err = st.Finish(ctx, k, "", resolution.Replayed)
	require.ErrorIs(t, err, resolution.ErrInvalid)
	begin(t, st, k, "other", s.lease(), resolution.InProgress)
}

func (s *suite) contextCancelled(t *testing.T) {
	st := s.newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k := resolution.Key{DLQ: dlqName(t), EntryID: "e"}
	_, err := st.Begin(ctx, k, "op", s.lease())
	require.Error(t, err)
	require.True(t, errors.Is(err, context.Canceled), "the error says the context ended: %v", err)
	_, err = st.Resolutions(ctx, k.DLQ)
	require.Error(t, err)
	got, err := st.Resolutions(ctxT(t), k.DLQ)
	require.NoError(t, err)
	require.Empty(t, got, "a cancelled begin leaves no record")
	b := begin(t, st, k, "op", s.lease(), resolution.Acquired)
	_, err = st.Finish(ctx, k, b.Token, resolution.Replayed)
	require.Error(t, err)
	require.Error(t, st.Abort(ctx, k, b.Token))
	got, err = st.Resolutions(ctxT(t), k.DLQ)
	require.NoError(t, err)
	require.Equal(t, resolution.InProgress, got["e"].Status, "a cancelled finish or abort changes nothing")
}

func (s *suite) unusualNames(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	base := dlqName(t)
	keys := []resolution.Key{
		{DLQ: base + "/a:b {c}", EntryID: "pos:orders.dlq/3/17"},
		{DLQ: base, EntryID: strings.Repeat("é", resolution.MaxLen/2)},
		{DLQ: base, EntryID: "with 'quote\" and ;--"},
		{DLQ: base, EntryID: "%_*?[]"},
	}
	for _, k := range keys {
		b := begin(t, st, k, "op 'x'", s.lease(), resolution.Acquired)
		_, err := st.Finish(ctx, k, b.Token, resolution.Replayed)
		require.NoError(t, err)
	}
	got, err := st.Resolutions(ctx, base)
	require.NoError(t, err)
	require.Len(t, got, 3, "no pattern matching in DLQ names or IDs")
	for _, k := range keys[1:] {
		require.Equal(t, "op 'x'", got[k.EntryID].By)
	}
	got, err = st.Resolutions(ctx, keys[0].DLQ)
	require.NoError(t, err)
	require.Contains(t, got, keys[0].EntryID)
	// A DLQ whose name starts like another's is another DLQ.
	got, err = st.Resolutions(ctx, base[:len(base)-1])
	require.NoError(t, err)
	require.Empty(t, got)
}

func (s *suite) reopen(t *testing.T) {
	if s.f.Reopen == nil {
		t.Skip("the store keeps its records in the process")
	}
	st := s.newStore(t)
	ctx := ctxT(t)
	dlq := dlqName(t)
	done := resolution.Key{DLQ: dlq, EntryID: "done"}
	held := resolution.Key{DLQ: dlq, EntryID: "held"}
	b := begin(t, st, done, "alice", s.lease(), resolution.Acquired)
	_, err := st.Finish(ctx, done, b.Token, resolution.Replayed)
	require.NoError(t, err)
	h := begin(t, st, held, "alice", s.lease(), resolution.Acquired)

	other := s.f.Reopen(t, st)
	got, err := other.Resolutions(ctx, dlq)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, resolution.Replayed, got["done"].Outcome)
	require.Equal(t, resolution.InProgress, got["held"].Status)
	begin(t, other, held, "bob", s.lease(), resolution.InProgress)
	begin(t, other, done, "bob", s.lease(), resolution.Resolved)
	rec, err := other.Finish(ctx, held, h.Token, resolution.Purged)
	require.NoError(t, err, "the holder's token works through another instance")
	require.Equal(t, "alice", rec.By)
}
