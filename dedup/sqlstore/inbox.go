package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/idempo/idempo/dedup"
)

type txKey struct{}

// TxFromContext returns the business transaction [Store.CompleteInTx] put in
// ctx. A handler makes its writes through it so they commit together with
// the completion record, or not at all. It reports false outside
// CompleteInTx.
func TxFromContext(ctx context.Context) (*sql.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(*sql.Tx)
	return tx, ok && tx != nil
}

// ErrInboxTxEnded is returned (wrapped) by [Store.CompleteInTx] when the
// database ended the inbox transaction on its own while fn ran, yet fn
// returned nil: MySQL and MariaDB roll the whole transaction back on a
// deadlock (error 1213), SQLite on some SQLITE_FULL, SQLITE_IOERR,
// SQLITE_BUSY or SQLITE_NOMEM errors, and the connection then goes on in
// autocommit mode. Nothing is recorded: the event stays claimed and is
// retried. Statements fn ran after the rollback were committed one by one,
// outside the inbox; a handler must return the error of any statement that
// fails in its transaction instead of retrying the statement.
//
// How the end is seen: on SQLite the completion matches only a mark the
// transaction made, on PostgreSQL only the transaction's own ID; on MariaDB
// @@in_transaction is read first, on MySQL 8 information_schema.innodb_trx,
// which needs the PROCESS privilege (without it the check is skipped and a
// warning logged once).
var ErrInboxTxEnded = errors.New("sqlstore: the database rolled the inbox transaction back while the handler ran (a handler must return a failed statement's error, not retry the statement); nothing was recorded")

// CompleteInTx implements [dedup.TxCompleter]: the transactional inbox.
//
// It begins a transaction (with Options.InboxTxOptions; READ COMMITTED by
// default on PostgreSQL and MySQL), whose first statement takes the record,
// fenced by token, before fn reads anything: a shared row lock on
// PostgreSQL and MySQL, the database's write lock on SQLite. It then calls
// fn with a context that carries the transaction (see [TxFromContext]),
// marks the record done for retention with one UPDATE that matches only
// while that same transaction is open, and commits. The business writes fn
// makes through the transaction and the completion thus commit together: an
// event's effect is applied exactly once, even when the process is killed
// at any point.
//
// While the transaction holds the record, [Store.Extend] on this store for
// the same key and token succeeds without a statement: no other owner can
// take the record over meanwhile (see the comment on inboxGate). A twin
// delivery's claim does not wait for the transaction while the lease in the
// table is live (it reports the event in progress); once that lease has run
// out, the twin's claim waits for the transaction to end, then finds the
// record done (or takes it over after a rollback). On SQLite every write
// waits for the transaction.
//
//   - fn fails: the transaction is rolled back and fn's error is returned
//     unchanged. The claim stays held; the caller releases it.
//   - token no longer holds the record in progress (the lease ran out and
//     another owner took it over, or the record was completed, released or
//     expired): everything is rolled back and an error wrapping
//     [dedup.ErrLeaseLost] is returned. Unlike [Store.Complete], a repeat
//     after a successful CompleteInTx is reported this way too, since fn's
//     writes must not be applied twice.
//   - the database ended the transaction while fn ran and fn returned nil:
//     an error wrapping [ErrInboxTxEnded] (or [dedup.ErrLeaseLost] if the
//     record has another owner by then).
//   - a serialisation failure or deadlock (SQLSTATE 40001/40P01, MySQL
//     1213): everything is rolled back; the error wraps
//     [dedup.ErrLeaseLost] if token no longer holds the record, else it is
//     the database's error (retry the event).
//   - the commit fails otherwise: the error is returned and the outcome is
//     unknown; a later Claim reports [dedup.StatusDone] if the commit took
//     effect.
//
// fn must make its writes through the transaction, must return the error of
// any of its statements that fails (not retry the statement: the database
// may have rolled the transaction back), must not commit or roll it back,
// and must not use the store's *sql.DB directly while it runs when the pool
// has a single connection (as with [OpenSQLite]): that would wait for the
// connection fn's own transaction holds. fn may be cancelled through ctx; a
// panic in fn rolls the transaction back and is re-raised.
//
// The claim itself is not part of this transaction: it was committed on its
// own by [Store.Claim], so the delivery counter survives a crash.
func (s *Store) CompleteInTx(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration, fn func(ctx context.Context) error) error {
	const op = "complete in transaction"
	if err := s.check(ctx, op, key); err != nil {
		return err
	}
	if retention <= 0 {
		return fmt.Errorf("%w: retention must be > 0, got %v", dedup.ErrInvalidRequest, retention)
	}
	if fn == nil {
		return fmt.Errorf("%w: fn is nil", dedup.ErrInvalidRequest)
	}
	// Prepare before the transaction holds a connection.
	holdSt, err := s.stmt(ctx, s.q.inboxHold)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	doneSt, err := s.stmt(ctx, s.q.inbox)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	h := key.Hash()
	// Before the transaction takes the record (and, with one connection,
	// the pool's connection): from here this token's extensions wait for
	// nothing.
	entry, err := s.gate.open(ctx, h, token)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	committed, lost := false, false
	defer func() {
		if lease := s.gate.close(h, token, entry); lease > 0 && !committed && !lost {
			// Extensions were skipped while the transaction held the
			// record; make the lease what the owner believes it is now
			// that the record can be taken again. A failure shows at the
			// owner's next extension.
			_ = s.extend(ctx, key, token, lease)
		}
	}()

	var tx *sql.Tx
	var txID int64
	err = s.retry(ctx, op, func() error {
		var err error
		tx, txID, err = s.beginInbox(ctx, holdSt, h[:], token)
		return err
	})
	if errors.Is(err, errNotHeld) {
		lost = true
		return s.leaseLost(op, key)
	}
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tx.Rollback()
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, tx)); err != nil {
		return err
	}
	if s.dialect == MySQL {
		open, err := s.inboxOpen(ctx, tx)
		if err != nil {
			return s.wrap(ctx, op, err)
		}
		if !open {
			done = true
			_ = tx.Rollback()
			return s.afterRollback(ctx, op, key, token, &lost, fmt.Errorf("sqlstore: %s %s %s: %w", s.dialect, op, key, ErrInboxTxEnded))
		}
	}
	args := []any{durArg(s.dialect, retention), hashArg(key), []byte(token)}
	if s.dialect == Postgres {
		args = append(args, txID)
	}
	res, err := tx.StmtContext(ctx, doneSt).ExecContext(ctx, args...)
	if err != nil {
		if errors.Is(err, sql.ErrTxDone) {
			return fmt.Errorf("sqlstore: %s %s: the transaction was ended by fn or by its context: %w", s.dialect, op, err)
		}
		done = true
		_ = tx.Rollback()
		return s.afterRollback(ctx, op, key, token, &lost, s.wrap(ctx, op, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	if n == 0 {
		// Nothing could change the record while the transaction held it:
		// the transaction was ended while fn ran (its mark, SQLite, or its
		// ID, PostgreSQL, is gone), and the UPDATE above ran, changing
		// nothing, in autocommit mode.
		done = true
		_ = tx.Rollback()
		return s.afterRollback(ctx, op, key, token, &lost, fmt.Errorf("sqlstore: %s %s %s: %w", s.dialect, op, key, ErrInboxTxEnded))
	}
	done = true
	if err := tx.Commit(); err != nil {
		if retryable(err) {
			// A serialisation failure at commit: rolled back for certain.
			return s.afterRollback(ctx, op, key, token, &lost, s.wrap(ctx, op+" (commit)", err))
		}
		return s.wrap(ctx, op+" (commit; outcome unknown)", err)
	}
	committed = true
	return nil
}

// errNotHeld: the inbox's first statement found token not holding the record.
var errNotHeld = errors.New("not held")

// beginInbox begins the inbox transaction and takes the record with its
// first statement, fenced by token: a shared row lock (PostgreSQL, MySQL),
// or the write lock and the in-inbox mark (SQLite). On PostgreSQL it returns
// the transaction's ID. A serialisation failure or deadlock here rolls back
// and is retried by the caller; fn has not run yet.
func (s *Store) beginInbox(ctx context.Context, holdSt *sql.Stmt, hash []byte, token dedup.Token) (*sql.Tx, int64, error) {
	tx, err := s.db.BeginTx(ctx, s.inboxTxOptions())
	if err != nil {
		return nil, 0, err
	}
	var txID int64
	st := tx.StmtContext(ctx, holdSt)
	if s.q.inboxHoldIsUpdate {
		var res sql.Result
		if res, err = st.ExecContext(ctx, hash, []byte(token)); err == nil {
			var n int64
			if n, err = res.RowsAffected(); err == nil && n == 0 {
				err = errNotHeld
			}
		}
	} else {
		err = st.QueryRowContext(ctx, hash, []byte(token)).Scan(&txID)
		if errors.Is(err, sql.ErrNoRows) {
			err = errNotHeld
		}
	}
	if err != nil {
		_ = tx.Rollback()
		return nil, 0, err
	}
	return tx, txID, nil
}

// MySQL's ways to tell that a transaction is still open (Store.inboxCheck).
const (
	inboxCheckUnknown     int32 = iota
	inboxCheckVariable          // MariaDB: @@in_transaction
	inboxCheckInnoDBTrx         // MySQL 8: information_schema.innodb_trx
	inboxCheckUnavailable       // innodb_trx not readable (no PROCESS privilege)
)

// inboxOpen reports whether tx is still open on MySQL/MariaDB: InnoDB rolls
// the whole transaction back on a deadlock and the connection goes on in
// autocommit mode, where the completion would commit on its own.
func (s *Store) inboxOpen(ctx context.Context, tx *sql.Tx) (bool, error) {
	var my *mysql.MySQLError
	switch s.inboxCheck.Load() {
	case inboxCheckUnknown, inboxCheckVariable:
		var open int
		err := tx.QueryRowContext(ctx, "SELECT @@in_transaction").Scan(&open)
		if err == nil {
			s.inboxCheck.Store(inboxCheckVariable)
			return open == 1, nil
		}
		if !errors.As(err, &my) || my.Number != 1193 { // ER_UNKNOWN_SYSTEM_VARIABLE: MySQL
			return false, err
		}
		s.inboxCheck.Store(inboxCheckInnoDBTrx)
		fallthrough
	case inboxCheckInnoDBTrx:
		var n int
		err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID()").Scan(&n)
		if err == nil {
			return n > 0, nil
		}
		if !errors.As(err, &my) || (my.Number != 1227 && my.Number != 1142) { // ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR
			return false, err
		}
		s.inboxCheck.Store(inboxCheckUnavailable)
		s.log.WarnContext(ctx, "sqlstore: the inbox cannot tell whether the database rolled its transaction back (reading information_schema.innodb_trx needs the PROCESS privilege); a handler that retries a statement after a deadlock can then lose writes", "error", err)
	}
	return true, nil
}

// inboxTxOptions are the options the inbox transaction begins with: the
// user's, else READ COMMITTED on the servers (whatever their default), and
// SQLite's only level.
func (s *Store) inboxTxOptions() *sql.TxOptions {
	if s.opts.InboxTxOptions != nil || s.dialect == SQLite {
		return s.opts.InboxTxOptions
	}
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// afterRollback tells, once the inbox transaction was rolled back, whether
// token still holds the record: if not, the error wraps
// [dedup.ErrLeaseLost]; else cause is returned.
func (s *Store) afterRollback(ctx context.Context, op string, key dedup.Key, token dedup.Token, lost *bool, cause error) error {
	st, err := s.stmt(ctx, s.q.heldState)
	if err != nil {
		return cause
	}
	var state int
	switch err := st.QueryRowContext(ctx, hashArg(key), []byte(token)).Scan(&state); {
	case errors.Is(err, sql.ErrNoRows), err == nil && state != stateInProgress:
		*lost = true
		return fmt.Errorf("%w (%w)", s.leaseLost(op, key), cause)
	}
	return cause
}

// inboxGate lets [Store.Extend] succeed without a statement for a key and
// token whose inbox transaction [Store.CompleteInTx] has open.
//
// Why that is safe: the inbox transaction's first statement reads the
// record fenced by the token and the in-progress state and locks it: a
// shared row lock on PostgreSQL and MySQL (FOR SHARE, LOCK IN SHARE MODE),
// the database's write lock on SQLite. From its success until the
// transaction ends, every statement that could end the token's hold — a
// claim's takeover (it locks the record FOR UPDATE, or takes SQLite's write
// lock), Release, Complete, cleanup's DELETE — needs a lock that conflicts
// with that one, so none can take effect before the transaction ends: the
// token holds the record whatever lease_until says, and an extension could
// only move a value nobody may act on meanwhile. Before the first statement
// succeeds, fn has not run: if a takeover happens then, that statement
// finds no record held by the token and CompleteInTx reports a lost lease
// without calling fn. After a rollback CompleteInTx runs a real extension
// with the last skipped lease, so the lease in the table is again at least
// what the owner counted on. An extension sent before the gate opened is
// waited for first, so none waits on the lock behind fn.
//
// (If the database ends the transaction on its own while fn runs, the lock
// goes with it before CompleteInTx learns of it; fn is expected to return
// the failed statement's error at once, see [ErrInboxTxEnded].)
type inboxGate struct {
	mu   sync.Mutex
	keys map[inboxID]*inboxEntry
}

type inboxID struct {
	hash  [32]byte
	token dedup.Token
}

type inboxEntry struct {
	open      bool          // an inbox transaction of this key and token is under way
	lease     time.Duration // the longest lease asked while open; 0 if none
	extending int           // extensions sent to the database
	idle      chan struct{} // closed when extending drops to 0; nil until waited for
}

// open marks key and token's inbox transaction under way, once the
// extensions already sent for them have returned.
func (g *inboxGate) open(ctx context.Context, hash [32]byte, token dedup.Token) (*inboxEntry, error) {
	id := inboxID{hash, token}
	for {
		g.mu.Lock()
		if g.keys == nil {
			g.keys = make(map[inboxID]*inboxEntry)
		}
		e := g.keys[id]
		if e == nil {
			e = &inboxEntry{}
			g.keys[id] = e
		}
		if e.extending == 0 && !e.open {
			e.open = true
			g.mu.Unlock()
			return e, nil
		}
		if e.idle == nil {
			e.idle = make(chan struct{})
		}
		idle := e.idle
		g.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// close ends what open began and returns the longest lease an extension
// asked for meanwhile (0 if none).
func (g *inboxGate) close(hash [32]byte, token dedup.Token, e *inboxEntry) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	lease := e.lease
	e.open, e.lease = false, 0
	g.release(inboxID{hash, token}, e)
	return lease
}

// beginExtend reports whether an extension of key and token may be skipped
// (their inbox transaction holds the record); if not, the caller must call
// endExtend once its statement returned.
func (g *inboxGate) beginExtend(hash [32]byte, token dedup.Token, lease time.Duration) (skip bool) {
	id := inboxID{hash, token}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.keys == nil {
		g.keys = make(map[inboxID]*inboxEntry)
	}
	e := g.keys[id]
	if e == nil {
		e = &inboxEntry{}
		g.keys[id] = e
	}
	if e.open {
		e.lease = max(e.lease, lease)
		return true
	}
	e.extending++
	return false
}

func (g *inboxGate) endExtend(hash [32]byte, token dedup.Token) {
	id := inboxID{hash, token}
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.keys[id]; e != nil {
		e.extending--
		g.release(id, e)
	}
}

// release wakes the waiters of an idle entry and forgets an unused one.
// g.mu is held.
func (g *inboxGate) release(id inboxID, e *inboxEntry) {
	if e.extending > 0 {
		return
	}
	if e.idle != nil {
		close(e.idle)
		e.idle = nil
	}
	if !e.open {
		delete(g.keys, id)
	}
}
