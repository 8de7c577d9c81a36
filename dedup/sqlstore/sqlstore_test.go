package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/deduptest"
	"github.com/idempo/idempo/dedup/sqlstore"
)

func TestMain(m *testing.M) {
	if runHelperIfAsked() {
		return
	}
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			// The servers' stores are shared by the cases; SQLite gets one
			// file per case, since its single connection would make the
			// cases' timings depend on each other.
			var shared *sqlstore.Store
			var dsns sync.Map // store → DSN, for Reopen
			if d != sqlstore.SQLite {
				var dsn string
				shared, dsn = newStore(t, d)
				dsns.Store(dedup.Store(shared), dsn)
			}
			deduptest.Run(t, func(t *testing.T) dedup.Store {
				if shared != nil {
					return shared
				}
				st, dsn := newStore(t, d)
				dsns.Store(dedup.Store(st), dsn)
				return st
			}, deduptest.Features{
				Parallel: true,
				// The clocks are µs (ms on SQLite); 10ms stretches the suite's
				// lease and retention waits to 500ms so that a loaded CI host
				// stalling a call for a few hundred ms does not fail it.
				Granularity: 10 * time.Millisecond,
				// A second pool (a second SQLite connection) on the same
				// database and table, migrated again as a restart would.
				Reopen: func(t *testing.T, st dedup.Store) dedup.Store {
					dsn, ok := dsns.Load(st)
					require.True(t, ok, "reopen: unknown store %p", st)
					db, err := openDSN(context.Background(), d, dsn.(string), 4)
					require.NoError(t, err)
					t.Cleanup(func() { _ = db.Close() })
					fresh, err := sqlstore.New(db, &sqlstore.Options{Table: st.(*sqlstore.Store).Table(), Logger: quietLogger})
					require.NoError(t, err)
					t.Cleanup(func() { _ = fresh.Close() })
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					require.NoError(t, fresh.Migrate(ctx))
					return fresh
				},
			})
		})
	}
}

// The conformance suite with Options.DisableSharing (TestConformance runs
// with the default, sharing), on PostgreSQL: every call in statements of its
// own.
func TestConformanceUnshared(t *testing.T) {
	t.Parallel()
	st, _ := newStoreWith(t, sqlstore.Postgres, func(o *sqlstore.Options) { o.DisableSharing = true })
	deduptest.Run(t, func(*testing.T) dedup.Store { return st }, deduptest.Features{
		Parallel:    true,
		Granularity: 10 * time.Millisecond,
	})
}

var errBoom = errors.New("handler failed")

// TestInboxConcurrentConsumers runs 8 consumers that all see every event
// (duplicate deliveries), fail at random, abandon claims, and sometimes
// outlive their lease; every event's effect must be committed exactly once,
// at every isolation level the inbox supports, and a takeover must show as
// a lost lease, never as a serialisation failure.
func TestInboxConcurrentConsumers(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			d := env.dialect
			st := newInboxStore(t, env)
			db := st.DB()
			effects := createEffects(t, db, d)
			insert := insertEffect(d, effects)
			scope := randomName("inbox-")
			const events, consumers = 120, 8
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()

			var wg sync.WaitGroup
			errs := make(chan error, consumers)
			for w := range consumers {
				wg.Go(func() {
					pending := rand.Perm(events)
					for len(pending) > 0 {
						if ctx.Err() != nil {
							errs <- fmt.Errorf("consumer %d: %d events left: %w", w, len(pending), ctx.Err())
							return
						}
						var next []int
						progress := false
						for _, i := range pending {
							id := fmt.Sprintf("event-%d", i)
							key := dedup.Key{Scope: scope, ID: id}
							req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 150 * time.Millisecond, Retention: time.Hour}
							res, err := st.Claim(ctx, key, req)
							if err != nil {
								errs <- fmt.Errorf("claim %s: %w", id, err)
								return
							}
							switch res.Status {
							case dedup.StatusDone:
								progress = true
								continue
							case dedup.StatusInProgress:
								next = append(next, i)
								continue
							case dedup.StatusAcquired:
							default:
								errs <- fmt.Errorf("claim %s: status %v", id, res.Status)
								return
							}
							progress = true
							next = append(next, i)
							r := rand.Float64()
							if r < 0.05 {
								continue // "crash": leave the claim to lapse
							}
							err = st.CompleteInTx(ctx, key, req.Token, time.Hour, func(ctx context.Context) error {
								tx, ok := sqlstore.TxFromContext(ctx)
								if !ok {
									return errors.New("no transaction in the context")
								}
								if _, err := tx.ExecContext(ctx, insert, id, w); err != nil {
									return err
								}
								switch {
								case r < 0.25:
									return errBoom // after the write: the rollback must undo it
								case r < 0.30:
									time.Sleep(200 * time.Millisecond) // outlive the lease
								}
								return nil
							})
							switch {
							case err == nil:
							case errors.Is(err, errBoom), serializationFailure(err) && !errors.Is(err, dedup.ErrLeaseLost):
								// SERIALIZABLE may fail a transaction that conflicts
								// with another event's: retried like a handler error.
								if err := st.Release(ctx, key, req.Token, true); err != nil && !errors.Is(err, dedup.ErrLeaseLost) {
									errs <- fmt.Errorf("release %s: %w", id, err)
									return
								}
							case errors.Is(err, dedup.ErrLeaseLost):
							default:
								errs <- fmt.Errorf("complete %s: %w", id, err)
								return
							}
						}
						pending = next
						if !progress {
							time.Sleep(10 * time.Millisecond)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			counts := effectCounts(t, db, d, effects)
			require.Len(t, counts, events)
			for id, n := range counts {
				require.Equal(t, 1, n, "effect of %s", id)
			}
		})
	}
}

func TestCompleteInTx(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			d := env.dialect
			st := newInboxStore(t, env)
			db := st.DB()
			effects := createEffects(t, db, d)
			insert := insertEffect(d, effects)
			ctx := context.Background()
			scope := randomName("tx-")
			claim := func(id string, lease time.Duration) (dedup.Key, dedup.Token) {
				k := dedup.Key{Scope: scope, ID: id}
				req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: lease, Retention: time.Hour}
				res, err := st.Claim(ctx, k, req)
				require.NoError(t, err)
				require.Equal(t, dedup.StatusAcquired, res.Status)
				return k, req.Token
			}
			write := func(id string) func(context.Context) error {
				return func(ctx context.Context) error {
					tx, ok := sqlstore.TxFromContext(ctx)
					require.True(t, ok)
					_, err := tx.ExecContext(ctx, insert, id, 0)
					return err
				}
			}

			_, ok := sqlstore.TxFromContext(ctx)
			require.False(t, ok)

			// fn's error comes back unchanged and nothing is committed.
			k, tok := claim("fails", time.Hour)
			err := st.CompleteInTx(ctx, k, tok, time.Hour, func(ctx context.Context) error {
				require.NoError(t, write("fails")(ctx))
				return errBoom
			})
			require.Same(t, errBoom, err)
			require.NoError(t, st.Release(ctx, k, tok, true))

			// A stale token rolls back the business write too.
			k, tok = claim("stale", 50*time.Millisecond)
			time.Sleep(120 * time.Millisecond)
			_, tok2 := claim("stale", time.Hour)
			err = st.CompleteInTx(ctx, k, tok, time.Hour, write("stale"))
			require.ErrorIs(t, err, dedup.ErrLeaseLost)
			require.NoError(t, st.CompleteInTx(ctx, k, tok2, time.Hour, write("stale")))
			// A repeat by the same owner must not apply fn's writes again.
			require.ErrorIs(t, st.CompleteInTx(ctx, k, tok2, time.Hour, write("stale")), dedup.ErrLeaseLost)
			res, err := st.Claim(ctx, k, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
			require.NoError(t, err)
			require.Equal(t, dedup.StatusDone, res.Status)

			// A panic rolls back and is re-raised.
			k, tok = claim("panics", time.Hour)
			require.PanicsWithValue(t, "boom", func() {
				_ = st.CompleteInTx(ctx, k, tok, time.Hour, func(ctx context.Context) error {
					_ = write("panics")(ctx)
					panic("boom")
				})
			})

			// Cancellation and invalid input.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			require.ErrorIs(t, st.CompleteInTx(cctx, k, tok, time.Hour, write("x")), context.Canceled)
			require.ErrorIs(t, st.CompleteInTx(ctx, dedup.Key{Scope: scope}, tok, time.Hour, write("x")), dedup.ErrInvalidKey)
			require.ErrorIs(t, st.CompleteInTx(ctx, k, tok, 0, write("x")), dedup.ErrInvalidRequest)

			counts := effectCounts(t, db, d, effects)
			require.Equal(t, map[string]int{"stale": 1}, counts)
		})
	}
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db, _ := openDB(t, d)
			table := randomName("idempo_test_")
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table, CleanupBatch: 7, CleanupInterval: 50 * time.Millisecond, Logger: quietLogger})
			require.NoError(t, err)
			t.Cleanup(func() { _ = st.Close(); dropTable(db, d, table) })
			ctx := context.Background()
			require.NoError(t, st.Migrate(ctx))
			require.NoError(t, st.Migrate(ctx), "Migrate is idempotent")
			scope := randomName("cleanup-")
			for i := range 30 {
				short := i < 20
				ret := time.Hour
				if short {
					ret = 50 * time.Millisecond
				}
				k := dedup.Key{Scope: scope, ID: fmt.Sprint(i)}
				// Claim for long, so a loaded machine cannot let the record
				// expire before Complete; the completion's retention is the
				// one cleanup judges.
				req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
				_, err := st.Claim(ctx, k, req)
				require.NoError(t, err)
				require.NoError(t, st.Complete(ctx, k, req.Token, ret))
			}
			time.Sleep(150 * time.Millisecond)
			n, err := st.Cleanup(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 20, n, "removed in batches of 7")
			var left int
			require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+quote(d, table)).Scan(&left))
			require.Equal(t, 10, left)
			n, err = st.Cleanup(ctx)
			require.NoError(t, err)
			require.Zero(t, n)

			// The background cleanup stops when asked, without leaking.
			k := dedup.Key{Scope: scope, ID: "bg"}
			req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 30 * time.Millisecond, Retention: 30 * time.Millisecond}
			_, err = st.Claim(ctx, k, req)
			require.NoError(t, err)
			stop := st.StartCleanup(ctx)
			require.Eventually(t, func() bool {
				var n int
				_ = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+quote(d, table)).Scan(&n)
				return n == 10
			}, 10*time.Second, 20*time.Millisecond)
			stop()
			stop()
			// Ending the context stops it too.
			cctx, cancel := context.WithCancel(ctx)
			stop = st.StartCleanup(cctx)
			cancel()
			stop()
		})
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, sqlstore.SQLite)
	for _, bad := range []string{"a-b", "1abc", "a b", `a"b`, "a.b.c", "x;DROP TABLE y", strings.Repeat("a", 49), "."} {
		_, err := sqlstore.New(db, &sqlstore.Options{Table: bad})
		require.Error(t, err, "table %q", bad)
		require.Contains(t, err.Error(), "Options.Table")
	}
	for _, good := range []string{"idempo_dedup", "_x", "Ops.dedup_1", strings.Repeat("a", 48)} {
		require.NoError(t, sqlstore.ValidateTable(good), good)
	}
	st, err := sqlstore.New(db, nil)
	require.NoError(t, err)
	require.Equal(t, sqlstore.SQLite, st.Dialect())
	require.Equal(t, sqlstore.DefaultTable, st.Table())

	_, err = sqlstore.New(db, &sqlstore.Options{Dialect: "oracle"})
	require.Error(t, err)
	_, err = sqlstore.New(db, &sqlstore.Options{CleanupBatch: -1})
	require.Error(t, err)
	_, err = sqlstore.New(nil, nil)
	require.Error(t, err)

	for _, d := range dialects {
		s, err := sqlstore.Schema(d, "ops.idempo_dedup")
		require.NoError(t, err)
		require.Contains(t, s, "CREATE TABLE IF NOT EXISTS")
		require.Contains(t, s, "idempo_dedup_expires_at")
	}
	_, err = sqlstore.Schema("oracle", "x")
	require.Error(t, err)
	_, err = sqlstore.Schema(sqlstore.Postgres, "bad name")
	require.Error(t, err)

	_, err = sqlstore.OpenSQLite("x.db?mode=ro")
	require.Error(t, err)
}

// TestSchemaQualifiedTable uses a table in another schema (PostgreSQL) or an
// attached database (SQLite) to check the qualified names the schema builds.
func TestSchemaQualifiedTable(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, sqlstore.Postgres)
	ctx := context.Background()
	schema := randomName("idempo_schema_")
	_, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	st, err := sqlstore.New(db, &sqlstore.Options{Table: schema + ".dedup"})
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.Migrate(ctx))
	k := dedup.Key{Scope: "s", ID: "1"}
	res, err := st.Claim(ctx, k, dedup.ClaimRequest{Token: "t", Lease: time.Hour, Retention: time.Hour})
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	var idx int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'dedup_expires_at'", schema).Scan(&idx))
	require.Equal(t, 1, idx)
}

func TestTokenTooLong(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t, sqlstore.SQLite)
	_, err := st.Claim(context.Background(), dedup.Key{Scope: "s", ID: "1"},
		dedup.ClaimRequest{Token: dedup.Token(strings.Repeat("t", sqlstore.MaxTokenLen+1)), Lease: time.Hour, Retention: time.Hour})
	require.ErrorIs(t, err, dedup.ErrInvalidRequest)
}

// TestConcurrentTakeover races 32 claims for a record whose lease ran out,
// then for a released one: exactly one takes it over each time.
func TestConcurrentTakeover(t *testing.T) {
	t.Parallel()
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			st, _ := newStore(t, d)
			ctx := context.Background()
			k := dedup.Key{Scope: randomName("takeover-"), ID: "x"}
			first := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 50 * time.Millisecond, Retention: time.Hour}
			_, err := st.Claim(ctx, k, first)
			require.NoError(t, err)
			time.Sleep(100 * time.Millisecond)
			race := func(wantDeliveries int) dedup.Token {
				var wg sync.WaitGroup
				var mu sync.Mutex
				var winners []dedup.Token
				start := make(chan struct{})
				for range 32 {
					wg.Go(func() {
						<-start
						req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
						res, err := st.Claim(ctx, k, req)
						if !assertNoError(t, err) {
							return
						}
						if res.Status == dedup.StatusAcquired {
							mu.Lock()
							winners = append(winners, req.Token)
							mu.Unlock()
							if res.Deliveries != wantDeliveries {
								t.Errorf("deliveries %d, want %d", res.Deliveries, wantDeliveries)
							}
						} else if res.Status != dedup.StatusInProgress {
							t.Errorf("status %v", res.Status)
						}
					})
				}
				close(start)
				wg.Wait()
				require.Len(t, winners, 1)
				return winners[0]
			}
			tok := race(2)
			require.ErrorIs(t, st.Complete(ctx, k, first.Token, time.Hour), dedup.ErrLeaseLost)
			require.NoError(t, st.Release(ctx, k, tok, true))
			tok = race(3)
			require.NoError(t, st.Complete(ctx, k, tok, time.Hour))
		})
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// The conformance suite at every isolation level the store supports: the
// session defaults PostgreSQL and MariaDB can be given (REPEATABLE READ and
// SERIALIZABLE; innodb_snapshot_isolation on) and the inbox levels asked
// through InboxTxOptions. The store's own statements must keep the contract
// whatever the database's default.
func TestConformanceAtIsolationLevels(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		if env.dsnAdd == "" && env.txOpts == nil {
			continue // the default set-up: TestConformance
		}
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			shared := newInboxStore(t, env)
			deduptest.Run(t, func(*testing.T) dedup.Store { return shared }, deduptest.Features{
				Parallel:    true,
				Granularity: 10 * time.Millisecond,
			})
		})
	}
}

// ClaimCapacity reports the connection limit the middleware bounds its
// claims by: 1 for SQLite, what SetMaxOpenConns set otherwise.
func TestClaimCapacity(t *testing.T) {
	t.Parallel()
	db, err := sqlstore.OpenSQLite(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := sqlstore.New(db, nil)
	require.NoError(t, err)
	require.Equal(t, 1, s.ClaimCapacity())
	db.SetMaxOpenConns(7)
	require.Equal(t, 7, s.ClaimCapacity())
}
