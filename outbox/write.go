package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup/sqlstore"
)

// Limits of [Outbox.Write] (the column sizes on MySQL).
const (
	MaxTopicLen = 255
	MaxUUIDLen  = 255
	MaxKeyLen   = 1024
)

// maxInsertRows bounds the rows of one INSERT (8 parameters each).
const maxInsertRows = 500

// newRow is a row to insert.
type newRow struct {
	uuid, topic, key string
	hash             int64
	payload          []byte
	metadata         string
	traceparent      string
}

// Write stores msgs for topic inside tx, the caller's business transaction:
// they are published after tx commits and never if it rolls back. It takes
// the per-key transaction locks (in key-hash order) and then sends one
// multi-row INSERT for all msgs (one per 500). On PostgreSQL locks and
// INSERT (and the notification, with Options.Notify) are one statement; on
// MySQL the locks are one more (a SELECT ... FOR UPDATE of rows of
// Table+"_keys", one per 14-bit slot of the key hash: two keys of one slot
// wait for each other). An empty topic, a nil message or an empty
// UUID is refused with an error matching [ErrInvalidMessage] and nothing is
// written; so are topics and UUIDs longer than 255 bytes, ordering keys
// longer than 1024, topics, UUIDs and keys that are not UTF-8 text without
// NUL bytes, and metadata keys or values that are not valid UTF-8 (they
// would be stored changed or refused by some databases). The messages are not changed. Safe for concurrent use (tx itself
// is not).
//
// Write all messages of a transaction in one call where possible: the locks
// of a second call are taken after the first call's, so two transactions
// writing the same keys in opposite orders may deadlock (the database
// aborts one; retry it).
func (o *Outbox) Write(ctx context.Context, tx *sql.Tx, topic string, msgs ...*message.Message) error {
	if tx == nil {
		return errNilTx
	}
	if topic == "" || len(topic) > MaxTopicLen {
		return fmt.Errorf("%w: topic %q is empty or longer than %d bytes", ErrInvalidMessage, topic, MaxTopicLen)
	}
	if !storableText(topic) {
		return fmt.Errorf("%w: topic %q is not UTF-8 text without NUL bytes", ErrInvalidMessage, topic)
	}
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("%w: message %d is nil", ErrInvalidMessage, i)
		}
		if m.UUID == "" || len(m.UUID) > MaxUUIDLen {
			return fmt.Errorf("%w: message %d has an empty UUID or one longer than %d bytes", ErrInvalidMessage, i, MaxUUIDLen)
		}
		if !storableText(m.UUID) {
			return fmt.Errorf("%w: message %d has UUID %q, which is not UTF-8 text without NUL bytes", ErrInvalidMessage, i, m.UUID)
		}
		for k, v := range m.Metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return fmt.Errorf("%w: message %d (UUID %s) has metadata %q: %q that is not valid UTF-8", ErrInvalidMessage, i, m.UUID, k, v)
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	//nolint:contextcheck // only the span context of the message's context is read
	if sc := trace.SpanContextFromContext(msgs[0].Context()); !trace.SpanContextFromContext(ctx).IsValid() && sc.IsValid() {
		// The Watermill way: the trace is in the message's context.
		ctx = trace.ContextWithSpanContext(ctx, sc)
	}
	ctx, span := o.tracer.Start(ctx, topic+" outbox write", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.destination.name", topic), attribute.Int("messaging.batch.message_count", len(msgs))))
	defer span.End()
	tp := traceparentOf(ctx)
	rows := make([]newRow, len(msgs))
	for i, m := range msgs {
		key := o.opts.Key(topic, m)
		if len(key) > MaxKeyLen {
			return fmt.Errorf("%w: message %d (UUID %s) has an ordering key longer than %d bytes", ErrInvalidMessage, i, m.UUID, MaxKeyLen)
		}
		if !storableText(key) {
			return fmt.Errorf("%w: message %d (UUID %s) has ordering key %q, which is not UTF-8 text without NUL bytes", ErrInvalidMessage, i, m.UUID, key)
		}
		rows[i] = newRow{
			uuid: m.UUID, topic: topic, key: key, hash: keyHash(o.table, key),
			payload: m.Payload, metadata: encodeMetadata(m.Metadata), traceparent: tp,
		}
		if rows[i].payload == nil {
			rows[i].payload = []byte{}
		}
	}
	if err := o.insertRows(ctx, tx, rows); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "outbox write failed")
		return o.wrap("write", err)
	}
	return nil
}

// storableText reports whether s is valid UTF-8 without NUL bytes, as the
// text columns of every supported database store it unchanged (PostgreSQL
// refuses NUL and invalid UTF-8, MySQL's utf8mb4 invalid UTF-8).
func storableText(s string) bool {
	return utf8.ValidString(s) && !strings.Contains(s, "\x00")
}

// traceparentOf returns the W3C traceparent of ctx's span, or "".
func traceparentOf(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// insertRows locks the rows' keys and inserts them in tx.
func (o *Outbox) insertRows(ctx context.Context, tx *sql.Tx, rows []newRow) error {
	hashes := make([]int64, len(rows))
	for i, r := range rows {
		hashes[i] = r.hash
	}
	hashes = sortedUnique(hashes)
	switch o.dialect {
	case sqlstore.MySQL:
		slots := make([]int64, len(hashes))
		for i, h := range hashes {
			slots[i] = lockSlot(h)
		}
		slots = sortedUnique(slots)
		// Record locks on existing rows of a unique index, taken in slot
		// order (no gap locks, whatever the isolation level).
		rs, err := tx.QueryContext(ctx, o.x.expand(`SELECT slot FROM {K} WHERE slot IN (`+intList(slots)+`) ORDER BY slot FOR UPDATE`))
		if err != nil {
			return err
		}
		n := 0
		for rs.Next() {
			n++
		}
		if err := errors.Join(rs.Err(), rs.Close()); err != nil {
			return err
		}
		if n != len(slots) {
			return fmt.Errorf("the lock rows of %s_keys are missing (run Migrate, or the statements of Schema)", o.table)
		}
	}
	for start := 0; start < len(rows); start += maxInsertRows {
		chunk := rows[start:min(start+maxInsertRows, len(rows))]
		q, args := o.insertSQL(chunk, start == 0, hashes)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

const insertCols = `(uuid, topic, msg_key, key_hash, bucket, payload, metadata, traceparent, created_at, next_attempt_at, attempts)`

// insertSQL builds one INSERT of rows. On PostgreSQL the first one also
// takes the advisory locks of hashes (sorted) before any row gets its id,
// and notifies the relays with Options.Notify.
func (o *Outbox) insertSQL(rows []newRow, first bool, hashes []int64) (string, []any) {
	args := make([]any, 0, 8*len(rows))
	var b strings.Builder
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		args = append(args, r.uuid, r.topic, r.key, r.hash, bucketOf(r.hash, o.opts.Buckets), r.payload, r.metadata, r.traceparent)
		if o.dialect == sqlstore.Postgres {
			b.WriteString(`(CAST(? AS text), CAST(? AS text), CAST(? AS text), CAST(? AS bigint), CAST(? AS integer), CAST(? AS bytea), CAST(? AS text), CAST(? AS text))`)
		} else {
			b.WriteString(`(?, ?, ?, ?, ?, ?, ?, ?, {NOW}, {NOW}, 0)`)
		}
	}
	if o.dialect != sqlstore.Postgres {
		return o.x.expand(`INSERT INTO {T} ` + insertCols + ` VALUES ` + b.String()), args
	}
	var from string
	if first {
		// The aggregate finishes (every lock taken, in key-hash order)
		// before the join yields the first row and nextval numbers it.
		from = `(SELECT count(pg_advisory_xact_lock(k)) AS n FROM (SELECT k FROM unnest(CAST(ARRAY[` + intList(hashes) +
			`] AS bigint[])) AS k ORDER BY k) AS s) AS l, `
	}
	q := `INSERT INTO {T} ` + insertCols + `
SELECT v.u, v.t, v.k, v.h, v.b, v.p, v.m, v.tp, clock_timestamp(), clock_timestamp(), 0
FROM ` + from + `(VALUES ` + b.String() + `) AS v(u, t, k, h, b, p, m, tp)`
	if first && o.opts.Notify {
		q = `WITH ins AS (` + q + `) SELECT pg_notify('` + o.n.channel + `', '')`
	}
	return o.x.expand(q), args
}
