package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
)

// NoInbox is the baseline of Options.Inbox: the handler runs the business
// transaction of the inbox variant itself (BEGIN, the same INSERT, COMMIT)
// for every message, without dedup, on the store's connection pool.
const NoInbox Variant = "no_inbox"

// inboxVariants are the variants of a run with Options.Inbox: the business
// transaction alone, and idempo's stack running it as its transactional
// inbox (in the chosen ordering).
var inboxVariants = [...]Variant{NoInbox, Idempo}

// bizTable is the business table of an inbox run: one row per handled
// message.
func bizTable(runID string) string { return "idempo_bench_biz_" + runID }

// inboxDB returns the SQL store's database, or an error naming --inbox for
// another store.
func (r *runner) inboxDB() (*sqlstore.Store, error) {
	st, ok := r.store.Store.(*sqlstore.Store)
	if !ok {
		return nil, fmt.Errorf("--inbox needs a SQL store (postgres, mysql or sqlite), got %s", r.store.Display)
	}
	return st, nil
}

// setupInbox creates the business table of an inbox run.
func (r *runner) setupInbox(ctx context.Context) error {
	st, err := r.inboxDB()
	if err != nil {
		return err
	}
	mark := "?"
	if st.Dialect() == sqlstore.Postgres {
		mark = "$1"
	}
	r.bizInsert = "INSERT INTO " + bizTable(r.opts.RunID) + " (event_id) VALUES (" + mark + ")"
	_, err = st.DB().ExecContext(ctx, "CREATE TABLE "+bizTable(r.opts.RunID)+" (event_id VARCHAR(200) NOT NULL)")
	if err != nil {
		return fmt.Errorf("create the business table: %w", err)
	}
	return nil
}

// dropInbox removes the business table.
func (r *runner) dropInbox(ctx context.Context) {
	if st, err := r.inboxDB(); err == nil {
		_, _ = st.DB().ExecContext(ctx, "DROP TABLE IF EXISTS "+bizTable(r.opts.RunID))
	}
}

// inboxWrite is the business write of the inbox variant: one INSERT in the
// stack's transaction (sqlstore.TxFromContext), before the handler.
func (r *runner) inboxWrite(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		tx, ok := sqlstore.TxFromContext(ctx)
		if !ok {
			return nil, errors.New("bench: no inbox transaction in the handler's context")
		}
		if _, err := tx.ExecContext(ctx, r.bizInsert, msg.UUID); err != nil {
			return nil, err
		}
		return next(msg)
	}
}

// ownTx is the business transaction of the NoInbox variant: BEGIN, the
// inbox variant's INSERT, the handler, COMMIT; at the isolation level of
// the inbox's transaction (READ COMMITTED on the servers).
func (r *runner) ownTx(next message.HandlerFunc) message.HandlerFunc {
	st, _ := r.inboxDB()
	var opts *sql.TxOptions
	if st.Dialect() != sqlstore.SQLite {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		tx, err := st.DB().BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, r.bizInsert, msg.UUID); err != nil {
			return nil, err
		}
		outs, err := next(msg)
		if err != nil {
			return nil, err
		}
		return outs, tx.Commit()
	}
}
