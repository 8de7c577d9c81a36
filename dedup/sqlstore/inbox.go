package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

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

// CompleteInTx implements [dedup.TxCompleter]: the transactional inbox.
//
// It begins a transaction (with Options.InboxTxOptions), calls fn with a
// context that carries it (see [TxFromContext]), then marks the record done
// for retention, fenced by token, with one UPDATE in the same transaction,
// and commits. The business writes fn makes through the transaction and the
// completion thus commit together: an event's effect is applied exactly
// once, even when the process is killed at any point.
//
//   - fn fails: the transaction is rolled back and fn's error is returned
//     unchanged. The claim stays held; the caller releases it.
//   - token no longer holds the record in progress (the lease ran out and
//     another owner took it over, or the record was completed, released or
//     expired): everything is rolled back and an error wrapping
//     [dedup.ErrLeaseLost] is returned. Unlike [Store.Complete], a repeat
//     after a successful CompleteInTx is reported this way too, since fn's
//     writes must not be applied twice.
//   - the commit fails: the error is returned and the outcome is unknown;
//     a later Claim reports [dedup.StatusDone] if the commit took effect.
//
// fn must make its writes through the transaction, must not commit or roll
// it back, and must not use the store's *sql.DB directly while it runs when
// the pool has a single connection (as with [OpenSQLite]): that would wait
// for the connection fn's own transaction holds. fn may be cancelled through
// ctx; a panic in fn rolls the transaction back and is re-raised.
//
// The claim itself is not part of this transaction: it was committed on its
// own by [Store.Claim], so the delivery counter survives a crash and a twin
// delivery never waits on a business transaction.
func (s *Store) CompleteInTx(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration, fn func(ctx context.Context) error) error {
	const op = "complete in transaction"
	if err := s.check(ctx, op, key); err != nil {
		return err
	}
	if retention <= 0 {
		return &dedup.RequestError{Field: "retention", Problem: fmt.Sprintf("must be > 0, got %v", retention)}
	}
	if fn == nil {
		return &dedup.RequestError{Field: "fn", Problem: "is nil"}
	}
	// Prepare before the transaction holds a connection.
	st, err := s.stmt(ctx, s.q.inbox)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	tx, err := s.db.BeginTx(ctx, s.opts.InboxTxOptions)
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
	res, err := tx.StmtContext(ctx, st).ExecContext(ctx, durArg(s.dialect, retention), hashArg(key), []byte(token))
	if err != nil {
		if errors.Is(err, sql.ErrTxDone) {
			return fmt.Errorf("sqlstore: %s %s: the transaction was ended by fn or by its context: %w", s.dialect, op, err)
		}
		return s.wrap(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	if n == 0 {
		return s.leaseLost(op, key)
	}
	done = true
	if err := tx.Commit(); err != nil {
		return s.wrap(ctx, op+" (commit; outcome unknown)", err)
	}
	return nil
}
