package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
)

// batchStore opens a store of dialect d on a table of its own, dropped at
// the end of the test (the servers' DSNs as the other tests take them).
func batchStore(t *testing.T, d Dialect) *Store {
	t.Helper()
	var db *sql.DB
	var err error
	switch d {
	case Postgres:
		db, err = sql.Open("pgx", cmpEnv("IDEMPO_TEST_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
	case MySQL:
		db, err = sql.Open("mysql", cmpEnv("IDEMPO_TEST_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test?parseTime=true"))
	default:
		db, err = OpenSQLite(filepath.Join(t.TempDir(), "dedup.db"))
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	st, err := New(db, &Options{Dialect: d, Table: "idempo_test_" + hex.EncodeToString(b[:]), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, st.Migrate(ctx), "%s is unreachable (start the server, or set its DSN variable)", d)
	t.Cleanup(func() {
		_ = st.Close()
		_, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+quoteIdent(d, st.Table()))
	})
	return st
}

func cmpEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newClaimCall(ctx context.Context, id string, req dedup.ClaimRequest) *claimCall {
	k := dedup.Key{Scope: "batch", ID: id}
	return &claimCall{ctx: ctx, key: k, hash: k.Hash(), req: req}
}

func batchReq() dedup.ClaimRequest {
	return dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Minute, Retention: time.Hour, Fingerprint: []byte("fp")}
}

// One batch answers each row on its own: new keys acquired, a done key
// done, a held key in progress, an acquirable key left to its caller's
// locked step, and a key twice in the batch answered as a twin that lost
// the race (or, when both calls carry one token, left to its caller).
func TestClaimBatchAnswersEachRow(t *testing.T) {
	t.Parallel()
	for _, d := range []Dialect{Postgres, MySQL, SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			st := batchStore(t, d)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			setup := func(id string) dedup.ClaimRequest {
				r := batchReq()
				res, err := st.Claim(ctx, dedup.Key{Scope: "batch", ID: id}, r)
				require.NoError(t, err)
				require.Equal(t, dedup.StatusAcquired, res.Status)
				return r
			}
			rd := setup("done")
			require.NoError(t, st.Complete(ctx, dedup.Key{Scope: "batch", ID: "done"}, rd.Token, time.Hour))
			setup("held")
			rr := setup("released")
			require.NoError(t, st.Release(ctx, dedup.Key{Scope: "batch", ID: "released"}, rr.Token, true))
			retry := setup("retry")

			twinReq := batchReq()
			calls := map[string]*claimCall{
				"new-1":    newClaimCall(ctx, "new-1", batchReq()),
				"new-2":    newClaimCall(ctx, "new-2", batchReq()),
				"done":     newClaimCall(ctx, "done", batchReq()),
				"held":     newClaimCall(ctx, "held", batchReq()),
				"released": newClaimCall(ctx, "released", batchReq()),
				"twin-a":   newClaimCall(ctx, "twin", twinReq),
				"twin-b":   newClaimCall(ctx, "twin", batchReq()),
			}
			batch := make([]*claimCall, 0, len(calls))
			for _, c := range calls {
				batch = append(batch, c)
			}
			st.sendClaims(batch)

			for _, id := range []string{"new-1", "new-2"} {
				c := calls[id]
				require.True(t, c.done, id)
				require.NoError(t, c.err, id)
				require.Equal(t, dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1}, c.res, id)
			}
			require.True(t, calls["done"].done)
			require.Equal(t, dedup.StatusDone, calls["done"].res.Status)
			require.True(t, calls["held"].done)
			require.Equal(t, dedup.StatusInProgress, calls["held"].res.Status)
			require.Positive(t, calls["held"].res.LeaseRemaining)
			require.False(t, calls["released"].done, "an acquirable record is acquired under its lock, by its caller")
			require.True(t, calls["released"].held)

			// The first twin in key order is whichever the batch sent; the
			// other lost the race to it.
			first, second := calls["twin-a"], calls["twin-b"]
			if !first.done || first.res.Status != dedup.StatusAcquired {
				first, second = second, first
			}
			require.True(t, first.done)
			require.Equal(t, dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1}, first.res)
			require.True(t, second.done, "a twin is answered by the batch")
			require.Equal(t, dedup.ClaimResult{Status: dedup.StatusInProgress, Deliveries: 1, Fingerprint: []byte("fp"), LeaseRemaining: time.Minute}, second.res)

			// The same token twice, beside a new key: a retried claim (it
			// renews the lease), not a lost race.
			ra, rb, n3 := newClaimCall(ctx, "retry", retry), newClaimCall(ctx, "retry", retry), newClaimCall(ctx, "new-3", batchReq())
			st.sendClaims([]*claimCall{ra, rb, n3})
			require.False(t, ra.done || rb.done, "a retried claim is renewed under its lock, by its caller")
			if d != MySQL {
				require.True(t, n3.done)
			}
			for _, c := range []*claimCall{ra, rb, n3} {
				if !c.done {
					res, err := st.claim(ctx, c.key, c.hash[:], c.req, claimStart(c))
					require.NoError(t, err)
					require.Equal(t, dedup.StatusAcquired, res.Status)
					require.Equal(t, 1, res.Deliveries)
				}
			}
		})
	}
}

// A statement that fails as a whole leaves every row to its own caller, so
// the row that fails fails alone.
func TestClaimBatchFailingRow(t *testing.T) {
	t.Parallel()
	st := batchStore(t, Postgres)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	good1, good2, good3 := newClaimCall(ctx, "good-1", batchReq()), newClaimCall(ctx, "good-2", batchReq()), newClaimCall(ctx, "good-3", batchReq())
	// PostgreSQL refuses a NUL in text, and with it the whole statement
	// (Key.Validate keeps such a scope out; this bypasses it).
	bad := newClaimCall(ctx, "bad", batchReq())
	bad.key.Scope = "bad\x00scope"
	bad.hash = bad.key.Hash()
	st.sendClaims([]*claimCall{good1, bad, good2, good3})
	for _, c := range []*claimCall{good1, bad, good2, good3} {
		require.False(t, c.done, "%s: answered from a failed statement", c.key)
		require.NoError(t, c.err)
	}
	for _, c := range []*claimCall{good1, good2, good3} {
		res, err := st.claim(ctx, c.key, c.hash[:], c.req, claimStart(c))
		require.NoError(t, err)
		require.Equal(t, dedup.StatusAcquired, res.Status)
	}
	_, err := st.claim(ctx, bad.key, bad.hash[:], bad.req, claimStart(bad))
	require.Error(t, err, "the bad row fails on its own")
}

// A completion batch with one stale token completes nothing for certain:
// each caller completes on its own, so the stale one alone is refused.
func TestCompleteBatchStaleToken(t *testing.T) {
	t.Parallel()
	for _, d := range []Dialect{Postgres, MySQL, SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			st := batchStore(t, d)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var batch []*completeCall
			for i, id := range []string{"a", "b", "c"} { // three rows, sent as four
				k := dedup.Key{Scope: "batch", ID: id}
				r := batchReq()
				_, err := st.Claim(ctx, k, r)
				require.NoError(t, err)
				tok := r.Token
				if i == 1 {
					tok = dedup.NewToken()
				}
				batch = append(batch, &completeCall{ctx: ctx, key: k, hash: k.Hash(), token: tok, retention: time.Hour})
			}
			st.sendCompletes(batch)
			for _, c := range batch {
				require.False(t, c.done, "%s answered though the batch did not match every row", c.key)
			}
			for i, c := range batch {
				err := st.finish(ctx, "complete", c.key, c.token, c.retention, stateDone)
				if i == 1 {
					require.ErrorIs(t, err, dedup.ErrLeaseLost)
				} else {
					require.NoError(t, err, "completed by the batch, idempotent on its own")
				}
			}
		})
	}
}

// Rows go out in key-hash order whatever order the calls came in, so two
// batches sharing keys lock them in the same order.
func TestBatchRowsInKeyOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var calls []*claimCall
	for i := range 50 {
		calls = append(calls, newClaimCall(ctx, hex.EncodeToString([]byte{byte(i)}), batchReq()))
	}
	sorted := liveSorted(calls)
	require.True(t, slices.IsSortedFunc(sorted, byHash))
	require.Len(t, sorted, 50)
}

// claimStart is where the caller of c goes on after its batch.
func claimStart(c *claimCall) int {
	switch {
	case c.held:
		return startLocked
	case c.exists:
		return startRead
	}
	return startInsert
}

// Two stores (two processes) sharing a table send batches with the same new
// keys at once: sent in key-hash order, no batch deadlocks another, so none
// fails as a whole.
func TestBatchesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			a := batchStore(t, d)
			b, err := New(a.DB(), &Options{Dialect: d, Table: a.Table(), Logger: a.log})
			require.NoError(t, err)
			t.Cleanup(func() { _ = b.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const keys, rounds = 24, 40
			for round := range rounds {
				start := make(chan struct{})
				var wg sync.WaitGroup
				errs := make(chan error, 2*keys)
				for _, st := range []*Store{a, b} {
					for i := range keys {
						wg.Go(func() {
							<-start
							k := dedup.Key{Scope: "deadlock", ID: fmt.Sprintf("r%d-k%d", round, i)}
							r := batchReq()
							res, err := st.Claim(ctx, k, r)
							if err == nil && res.Status == dedup.StatusAcquired {
								err = st.Complete(ctx, k, r.Token, time.Hour)
							}
							if err != nil {
								errs <- err
							}
						})
					}
				}
				close(start)
				wg.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err)
				}
			}
			require.Zero(t, a.failures.Load()+b.failures.Load(), "shared statements failed as a whole (deadlocks)")
		})
	}
}

// Statements are prepared for power-of-two row counts only, so a store
// prepares few of them (MySQL bounds the prepared statements of a server).
func TestPadded(t *testing.T) {
	t.Parallel()
	for n := 1; n <= maxBatch; n++ {
		p := padded(n)
		require.Equal(t, 0, p&(p-1), "%d rows are sent as %d", n, p)
		require.GreaterOrEqual(t, p, n)
		require.Less(t, p, 2*n)
	}
}

// A batch's statement runs until every caller's context has ended, not
// until the first one's.
func TestBatchContextEndsWithTheLastCaller(t *testing.T) {
	t.Parallel()
	a, cancelA := context.WithCancel(context.Background())
	b, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	ctx, stop := batchContext([]context.Context{a, b})
	defer stop()
	cancelA()
	require.NoError(t, ctx.Err(), "one caller's cancellation ended the batch")
	cancelB()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the batch's context outlived every caller's by 10s")
	}
}
