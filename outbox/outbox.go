package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/tracing"
)

// Outbox writes messages into an outbox table in callers' transactions and
// reads its state. It is safe for concurrent use by many goroutines and
// processes sharing the table; it starts no goroutine.
type Outbox struct {
	db      *sql.DB
	dialect sqlstore.Dialect
	table   string
	opts    Options
	n       names
	x       expander
	tracer  trace.Tracer
}

// New returns an Outbox on db. opts may be nil. The caller keeps ownership of
// db. Call [Outbox.Migrate] (or run [Outbox.Schema] by hand) before the first
// write. Invalid options give an error matching [ErrInvalidConfig]; so does
// a Buckets different from the one an existing table was migrated with (New
// reads the lease table for that, waiting at most 3 seconds, and skips the
// check when it cannot; Migrate checks again).
func New(db *sql.DB, opts *Options) (*Outbox, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil *sql.DB", ErrInvalidConfig)
	}
	var c Options
	if opts != nil {
		c = *opts
	}
	if c.Dialect == "" {
		d, err := sqlstore.DetectDialect(db)
		if err != nil {
			return nil, fmt.Errorf("%w: %w (set Options.Dialect)", ErrInvalidConfig, err)
		}
		c.Dialect = d
	}
	if c.Dialect != sqlstore.Postgres && c.Dialect != sqlstore.MySQL && c.Dialect != sqlstore.SQLite {
		return nil, fmt.Errorf("%w: Options.Dialect %q is not one of %q, %q, %q", ErrInvalidConfig, c.Dialect, sqlstore.Postgres, sqlstore.MySQL, sqlstore.SQLite)
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if err := sqlstore.ValidateTable(c.Table); err != nil {
		return nil, fmt.Errorf("%w: Options.Table: %w", ErrInvalidConfig, err)
	}
	switch {
	case c.Buckets == 0:
		c.Buckets = DefaultBuckets
	case c.Buckets < 1 || c.Buckets > MaxBuckets:
		return nil, fmt.Errorf("%w: Options.Buckets must be in [1, %d], got %d", ErrInvalidConfig, MaxBuckets, c.Buckets)
	}
	if c.Key == nil {
		c.Key = defaultKey
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	n := newNames(c.Dialect, c.Table)
	o := &Outbox{
		db: db, dialect: c.Dialect, table: c.Table, opts: c, n: n,
		x:      expander{d: c.Dialect, n: n},
		tracer: c.TracerProvider.Tracer(tracing.InstrumentationName),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := o.leaseBuckets(ctx); err == nil && got > 0 && got != c.Buckets {
		return nil, fmt.Errorf("%w: Options.Buckets is %d but table %s was migrated with %d", ErrInvalidConfig, c.Buckets, c.Table, got)
	}
	return o, nil
}

func defaultKey(_ string, msg *message.Message) string {
	if k := msg.Metadata.Get(KeyMetadata); k != "" {
		return k
	}
	return msg.UUID
}

// leaseBuckets counts the bucket rows of the lease table.
func (o *Outbox) leaseBuckets(ctx context.Context) (int, error) {
	var got int
	err := o.db.QueryRowContext(ctx, o.x.expand(`SELECT COUNT(*) FROM {L} WHERE bucket >= 0`)).Scan(&got)
	return got, err
}

// Migrate creates the outbox, lease, dead and (MySQL) key tables and their
// indexes if they do not exist, and the lease rows of Options.Buckets. It is
// idempotent and safe to run from several processes at once. It fails with
// an error matching [ErrInvalidConfig] when the table was migrated with a
// different Buckets.
func (o *Outbox) Migrate(ctx context.Context) error {
	var tx *sql.Tx
	var err error
	if o.dialect == sqlstore.Postgres {
		// Concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL's
		// catalog constraints; serialise them.
		if tx, err = o.db.BeginTx(ctx, nil); err != nil {
			return o.wrap("migrate", err)
		}
		defer func() { _ = tx.Rollback() }()
		h := fnv.New64a()
		_, _ = h.Write([]byte("idempo/outbox.Migrate:" + o.table))
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
			return o.wrap("migrate", err)
		}
	}
	exec := func(q string) error {
		if tx != nil {
			_, err := tx.ExecContext(ctx, q)
			return err
		}
		_, err := o.db.ExecContext(ctx, q)
		return err
	}
	for _, q := range schema(o.dialect, o.n) {
		if err := exec(q); err != nil {
			return o.wrap("migrate", err)
		}
	}
	if tx != nil {
		if err := tx.Commit(); err != nil {
			return o.wrap("migrate", err)
		}
	}
	got, err := o.leaseBuckets(ctx)
	if err != nil {
		return o.wrap("migrate", err)
	}
	if got != 0 && got != o.opts.Buckets {
		return fmt.Errorf("%w: Options.Buckets is %d but table %s was migrated with %d", ErrInvalidConfig, o.opts.Buckets, o.table, got)
	}
	for _, q := range o.rowsSQL() {
		if _, err := o.db.ExecContext(ctx, q); err != nil {
			return o.wrap("migrate", err)
		}
	}
	return nil
}

// rowsSQL inserts the free lease rows of every bucket and (MySQL) the lock
// rows, skipping those that exist.
func (o *Outbox) rowsSQL() []string {
	var ins, tail string
	switch o.dialect {
	case sqlstore.MySQL:
		ins = "INSERT IGNORE INTO "
	case sqlstore.SQLite:
		ins = "INSERT OR IGNORE INTO "
	default:
		ins, tail = "INSERT INTO ", " ON CONFLICT DO NOTHING"
	}
	var b []byte
	for i := range o.opts.Buckets {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "(%d, '', 0, {ZERO})", i)
	}
	out := []string{o.x.expand(ins + "{L} (bucket, owner, token, lease_until) VALUES " + string(b) + tail)}
	if o.dialect == sqlstore.MySQL {
		b = b[:0]
		for i := range lockSlots {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, "(%d)", i)
		}
		out = append(out, o.x.expand(ins+"{K} (slot) VALUES "+string(b)))
	}
	return out
}

// Schema returns the statements Migrate runs, for a DBA to run by hand: the
// tables and indexes, then the lease row of each of Options.Buckets buckets
// and, on MySQL, the 16,384 lock rows of Table+"_keys". Each is idempotent.
func (o *Outbox) Schema() []string { return append(schema(o.dialect, o.n), o.rowsSQL()...) }

// Dialect returns the SQL dialect in use.
func (o *Outbox) Dialect() sqlstore.Dialect { return o.dialect }

// Table returns the outbox table's name.
func (o *Outbox) Table() string { return o.table }

func (o *Outbox) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("outbox: %s %s on %s: %w", o.dialect, op, o.table, err)
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

var errNilTx = errors.New("outbox: nil *sql.Tx")
