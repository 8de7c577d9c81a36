package outbox

import (
	"context"
	"database/sql"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
)

var errNotImplemented = errors.New("outbox: not implemented")

// Outbox writes messages into an outbox table in callers' transactions and
// reads its state. It is safe for concurrent use by many goroutines and
// processes sharing the table; it starts no goroutine.
type Outbox struct {
	db      *sql.DB
	dialect sqlstore.Dialect
	table   string
	opts    Options
}

// New returns an Outbox on db. opts may be nil. The caller keeps ownership of
// db. Call [Outbox.Migrate] (or run [Outbox.Schema] by hand) before the first
// write. Invalid options give an error matching [ErrInvalidConfig].
func New(db *sql.DB, opts *Options) (*Outbox, error) {
	return nil, errNotImplemented
}

// Migrate creates the outbox, lease, dead and (MySQL) key tables and their
// indexes if they do not exist, and the lease rows of Options.Buckets. It is
// idempotent and safe to run from several processes at once.
func (o *Outbox) Migrate(ctx context.Context) error { return errNotImplemented }

// Schema returns the statements Migrate runs, for a DBA to run by hand.
func (o *Outbox) Schema() []string { return nil }

// Dialect returns the SQL dialect in use.
func (o *Outbox) Dialect() sqlstore.Dialect { return o.dialect }

// Table returns the outbox table's name.
func (o *Outbox) Table() string { return o.table }

// Write stores msgs for topic inside tx, the caller's business transaction:
// they are published after tx commits and never if it rolls back. It takes
// the per-key transaction locks (in key-hash order) and then sends one
// multi-row INSERT for all msgs. An empty topic, a nil message or an empty
// UUID is refused with an error matching [ErrInvalidMessage] and nothing is
// written. The messages are not changed. Safe for concurrent use (tx itself
// is not).
func (o *Outbox) Write(ctx context.Context, tx *sql.Tx, topic string, msgs ...*message.Message) error {
	return errNotImplemented
}

// Publisher returns a message.Publisher whose Publish calls [Outbox.Write]
// with ctx and tx, so existing Watermill code publishes transactionally by
// swapping its publisher. Its Close does nothing. It must not be used after
// tx ends.
func (o *Outbox) Publisher(ctx context.Context, tx *sql.Tx) message.Publisher {
	return &txPublisher{ctx: ctx, tx: tx, o: o}
}

type txPublisher struct {
	ctx context.Context //nolint:containedctx // bound to one transaction's scope
	tx  *sql.Tx
	o   *Outbox
}

func (p *txPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.o.Write(p.ctx, p.tx, topic, msgs...)
}

func (p *txPublisher) Close() error { return nil }
