package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// extendDuring extends key's lease from another goroutine, as the lease
// keeper does while a handler runs, and returns its error (a deadline ends
// an extension that would wait for the inbox transaction).
func extendDuring(st *sqlstore.Store, key dedup.Key, token dedup.Token, lease time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- st.Extend(ctx, key, token, lease) }()
	return <-errc
}

// TestInboxOutlivesExtensions: a handler that reads, then has its lease
// extended (as a handler that outlives Lease/3 does), completes, at every
// isolation level the inbox supports: the extension neither waits for the
// inbox transaction (SQLite's one connection) nor makes its completion a
// serialisation failure (snapshot isolation).
func TestInboxOutlivesExtensions(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			d := env.dialect
			st := newInboxStore(t, env)
			db := st.DB()
			effects := createEffects(t, db, d)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			k := dedup.Key{Scope: randomName("extend-"), ID: "e"}
			req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 2 * time.Second, Retention: time.Hour}
			res, err := st.Claim(ctx, k, req)
			require.NoError(t, err)
			require.Equal(t, dedup.StatusAcquired, res.Status)

			err = st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				var n int
				if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+quote(d, effects)).Scan(&n); err != nil {
					return err
				}
				for range 3 {
					if err := extendDuring(st, k, req.Token, 2*time.Second); err != nil {
						return fmt.Errorf("extension during the inbox: %w", err)
					}
				}
				_, err := tx.ExecContext(ctx, insertEffect(d, effects), "e", n)
				return err
			})
			require.NoError(t, err)
			require.Equal(t, map[string]int{"e": 1}, effectCounts(t, db, d, effects))
			res, err = st.Claim(ctx, k, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
			require.NoError(t, err)
			require.Equal(t, dedup.StatusDone, res.Status)

			// An extension skipped while the transaction held the record is
			// made for real once it rolls back: the lease is what the owner
			// counts on.
			k2 := dedup.Key{Scope: k.Scope, ID: "rolled-back"}
			req2 := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 2 * time.Second, Retention: time.Hour}
			_, err = st.Claim(ctx, k2, req2)
			require.NoError(t, err)
			err = st.CompleteInTx(ctx, k2, req2.Token, time.Hour, func(ctx context.Context) error {
				if err := extendDuring(st, k2, req2.Token, time.Hour); err != nil {
					return fmt.Errorf("extension during the inbox: %w", err)
				}
				return errBoom
			})
			require.ErrorIs(t, err, errBoom)
			res, err = st.Claim(ctx, k2, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
			require.NoError(t, err)
			require.Equal(t, dedup.StatusInProgress, res.Status)
			require.Greater(t, res.LeaseRemaining, time.Minute, "the skipped one-hour extension was made after the rollback")
			require.NoError(t, st.Extend(ctx, k2, req2.Token, time.Second), "extensions go to the database again")
		})
	}
}

// TestInboxTxEndedByDatabase: the database ends the inbox transaction while
// the handler runs (here an explicit ROLLBACK, as MySQL does on a deadlock
// and SQLite on some I/O errors) and the handler goes on writing in
// autocommit mode and returns nil. Nothing may be recorded.
func TestInboxTxEndedByDatabase(t *testing.T) {
	t.Parallel()
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			st, _ := newStore(t, d)
			db := st.DB()
			effects := createEffects(t, db, d)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			k := dedup.Key{Scope: randomName("ended-"), ID: "e"}
			req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
			_, err := st.Claim(ctx, k, req)
			require.NoError(t, err)
			err = st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				if _, err := tx.ExecContext(ctx, insertEffect(d, effects), "lost", 0); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, "ROLLBACK"); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, insertEffect(d, effects), "outside", 0)
				return err
			})
			require.ErrorIs(t, err, sqlstore.ErrInboxTxEnded)
			require.NotErrorIs(t, err, dedup.ErrLeaseLost)
			require.Equal(t, map[string]int{"outside": 1}, effectCounts(t, db, d, effects))
			// Still claimed by its owner, not done.
			res, err := st.Claim(ctx, k, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
			require.NoError(t, err)
			require.Equal(t, dedup.StatusInProgress, res.Status)
			require.NoError(t, st.Complete(ctx, k, req.Token, time.Hour))
		})
	}
}

// TestInboxDeadlockInHandler: on MariaDB a real deadlock inside the handler
// makes InnoDB roll the whole inbox transaction back; the handler retries
// its statement, which then commits on its own, and returns nil. The inbox
// must report the lost transaction and record nothing, not commit the
// completion in autocommit mode.
func TestInboxDeadlockInHandler(t *testing.T) {
	t.Parallel()
	const d = sqlstore.MySQL
	st, _ := newStore(t, d)
	db := st.DB()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, filler := randomName("rows_"), randomName("filler_")
	for _, q := range []string{
		"CREATE TABLE " + rows + " (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE " + filler + " (id INT PRIMARY KEY) ENGINE=InnoDB",
		"INSERT INTO " + rows + " VALUES (1, 0), (2, 0)",
	} {
		_, err := db.ExecContext(ctx, q)
		require.NoError(t, err)
	}
	t.Cleanup(func() { dropTable(db, d, rows); dropTable(db, d, filler) })

	// The other transaction locks row 2 and has written many rows, so
	// InnoDB picks the inbox transaction (the smaller one) as the victim.
	other, err := db.Conn(ctx)
	require.NoError(t, err)
	defer other.Close()
	otherTx, err := other.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = otherTx.Rollback() }()
	for i := range 50 {
		_, err := otherTx.ExecContext(ctx, "INSERT INTO "+filler+" VALUES (?)", i)
		require.NoError(t, err)
	}
	_, err = otherTx.ExecContext(ctx, "UPDATE "+rows+" SET v = v + 1 WHERE id = 2")
	require.NoError(t, err)

	k := dedup.Key{Scope: randomName("deadlock-"), ID: "e"}
	req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
	_, err = st.Claim(ctx, k, req)
	require.NoError(t, err)
	var sawDeadlock bool
	otherErr := make(chan error, 1)
	err = st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
		tx, _ := sqlstore.TxFromContext(ctx)
		if _, err := tx.ExecContext(ctx, "UPDATE "+rows+" SET v = v + 10 WHERE id = 1"); err != nil {
			return err
		}
		go func() { // crosses the locks: wants row 1 while holding row 2
			_, err := otherTx.ExecContext(ctx, "UPDATE "+rows+" SET v = v + 1 WHERE id = 1")
			if err == nil {
				err = otherTx.Commit()
			}
			otherErr <- err
		}()
		const stmt = "UPDATE " + "%s SET v = v + 10 WHERE id = 2"
		_, err := tx.ExecContext(ctx, fmt.Sprintf(stmt, rows))
		var my *mysql.MySQLError
		if errors.As(err, &my) && my.Number == 1213 {
			sawDeadlock = true
			// The common mistake: retry the statement instead of returning.
			_, err = tx.ExecContext(ctx, fmt.Sprintf(stmt, rows))
		}
		return err
	})
	select {
	case oerr := <-otherErr:
		require.NoError(t, oerr, "InnoDB picked the other transaction as the deadlock victim")
	case <-ctx.Done():
		t.Fatal("the other transaction did not finish")
	}
	require.True(t, sawDeadlock, "the handler's statement met no deadlock")
	require.ErrorIs(t, err, sqlstore.ErrInboxTxEnded)
	res, err := st.Claim(ctx, k, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
	require.NoError(t, err)
	require.Equal(t, dedup.StatusInProgress, res.Status, "nothing recorded")
	var v1 int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT v FROM "+rows+" WHERE id = 1").Scan(&v1))
	require.Equal(t, 1, v1, "the write made before the deadlock was rolled back")
}

// TestInboxTakeoverDuringHandler: the lease runs out while the handler,
// having read in its transaction, still runs, and a twin claims the event.
// Either the inbox commits and the twin finds the event done, or the twin
// takes the record over and the inbox reports a lost lease (not a
// serialisation failure, which would make the owner run the handler again);
// the effect exists once.
func TestInboxTakeoverDuringHandler(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			d := env.dialect
			st := newInboxStore(t, env)
			db := st.DB()
			effects := createEffects(t, db, d)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			k := dedup.Key{Scope: randomName("takeover-"), ID: "e"}
			req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: 200 * time.Millisecond, Retention: time.Hour}
			_, err := st.Claim(ctx, k, req)
			require.NoError(t, err)
			type result struct {
				res dedup.ClaimResult
				err error
			}
			twin := make(chan result, 1)
			twinReq := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
			err = st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				var n int
				if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+quote(d, effects)).Scan(&n); err != nil {
					return err
				}
				time.Sleep(300 * time.Millisecond) // the lease runs out
				go func() {
					res, err := st.Claim(ctx, k, twinReq)
					twin <- result{res, err}
				}()
				// Let the twin's claim take effect, unless it waits for
				// this transaction.
				select {
				case r := <-twin:
					twin <- r
				case <-time.After(2 * time.Second):
				}
				_, err := tx.ExecContext(ctx, insertEffect(d, effects), "e", n)
				return err
			})
			var tw result
			select {
			case tw = <-twin:
			case <-ctx.Done():
				t.Fatal("the twin's claim did not return")
			}
			require.NoError(t, tw.err)
			if err == nil {
				require.Equal(t, dedup.StatusDone, tw.res.Status, "the inbox committed: the twin finds the event done")
				require.Equal(t, map[string]int{"e": 1}, effectCounts(t, db, d, effects))
				return
			}
			require.ErrorIs(t, err, dedup.ErrLeaseLost)
			require.Equal(t, dedup.StatusAcquired, tw.res.Status)
			require.Empty(t, effectCounts(t, db, d, effects))
			require.NoError(t, st.CompleteInTx(ctx, k, twinReq.Token, time.Hour, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				_, err := tx.ExecContext(ctx, insertEffect(d, effects), "e", 1)
				return err
			}))
			require.Equal(t, map[string]int{"e": 1}, effectCounts(t, db, d, effects))
		})
	}
}

// TestInboxDefaultIsolation: with no InboxTxOptions the inbox runs at READ
// COMMITTED whatever the session's default; asked options are kept.
func TestInboxDefaultIsolation(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		if env.dialect != sqlstore.Postgres {
			continue
		}
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			st := newInboxStore(t, env)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			k := dedup.Key{Scope: randomName("level-"), ID: "e"}
			req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
			_, err := st.Claim(ctx, k, req)
			require.NoError(t, err)
			var level string
			require.NoError(t, st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				return tx.QueryRowContext(ctx, "SHOW transaction_isolation").Scan(&level)
			}))
			want := "read committed"
			if env.txOpts != nil {
				want = strings.ToLower(env.txOpts.Isolation.String())
			}
			require.Equal(t, want, level)
		})
	}
}

// TestInboxTwinDoesNotWait: on the servers a twin's claim of an event whose
// inbox transaction is open (its lease still live) answers in progress at
// once; it does not wait for the handler on a connection.
func TestInboxTwinDoesNotWait(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		if env.dialect == sqlstore.SQLite {
			continue // one writer at a time: a twin always waits for the transaction
		}
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			st := newInboxStore(t, env)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			k := dedup.Key{Scope: randomName("twin-"), ID: "e"}
			req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
			_, err := st.Claim(ctx, k, req)
			require.NoError(t, err)
			require.NoError(t, st.CompleteInTx(ctx, k, req.Token, time.Hour, func(ctx context.Context) error {
				// Far shorter than the handler could take; the claim must
				// not wait for the transaction.
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				defer ccancel()
				res, err := st.Claim(cctx, k, dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour})
				if err != nil {
					return fmt.Errorf("twin's claim during the inbox: %w", err)
				}
				if res.Status != dedup.StatusInProgress {
					return fmt.Errorf("twin's claim during the inbox: status %v, want in progress", res.Status)
				}
				return nil
			}))
		})
	}
}
