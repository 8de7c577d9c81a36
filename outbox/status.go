package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"
)

// TopicStatus is the state of one topic's rows.
type TopicStatus struct {
	Topic string
	// Pending counts the unsent rows (due or waiting for a retry).
	Pending int64
	// Dead counts the rows in the dead table.
	Dead int64
	// OldestPending is the age of the oldest unsent row by the database
	// clock; 0 when none.
	OldestPending time.Duration
}

// Status returns per topic the pending and dead counts and the age of the
// oldest unsent row, sorted by topic. It scans the unsent rows and the dead
// table.
func (o *Outbox) Status(ctx context.Context) ([]TopicStatus, error) {
	by := map[string]*TopicStatus{}
	get := func(t string) *TopicStatus {
		if s, ok := by[t]; ok {
			return s
		}
		s := &TopicStatus{Topic: t}
		by[t] = s
		return s
	}
	rows, err := o.db.QueryContext(ctx, o.x.expand(`SELECT topic, COUNT(*), MAX({AGE:created_at}) FROM {T} WHERE sent_at IS NULL GROUP BY topic`))
	if err != nil {
		return nil, o.wrap("status", err)
	}
	for rows.Next() {
		var t string
		var n, age int64
		if err := rows.Scan(&t, &n, &age); err != nil {
			_ = rows.Close()
			return nil, o.wrap("status", err)
		}
		s := get(t)
		s.Pending, s.OldestPending = n, max(time.Duration(age)*time.Microsecond, 0)
	}
	if err := rows.Close(); err != nil {
		return nil, o.wrap("status", err)
	}
	if err := rows.Err(); err != nil {
		return nil, o.wrap("status", err)
	}
	rows, err = o.db.QueryContext(ctx, o.x.expand(`SELECT topic, COUNT(*) FROM {D} GROUP BY topic`))
	if err != nil {
		return nil, o.wrap("status", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var t string
		var n int64
		if err := rows.Scan(&t, &n); err != nil {
			return nil, o.wrap("status", err)
		}
		get(t).Dead = n
	}
	if err := rows.Err(); err != nil {
		return nil, o.wrap("status", err)
	}
	out := make([]TopicStatus, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// DeadRow is a row a relay moved aside: it could not publish it.
type DeadRow struct {
	ID       int64 // the row's id in the outbox table, kept in the dead table
	Topic    string
	Key      string
	UUID     string
	Reason   string // the last publish error's text
	Attempts int
	DeadAt   time.Time // by the database clock
	Payload  []byte
	Metadata map[string]string
}

// deadCols are the columns scanDead reads.
const deadCols = `id, topic, msg_key, uuid, reason, attempts, {EPOCH:dead_at}, payload, metadata, key_hash, traceparent`

type deadRecord struct {
	DeadRow
	hash        int64
	traceparent string
	rawMeta     string
}

func scanDead(rows *sql.Rows) (deadRecord, error) {
	var r deadRecord
	var at int64
	if err := rows.Scan(&r.ID, &r.Topic, &r.Key, &r.UUID, &r.Reason, &r.Attempts, &at, &r.Payload, &r.rawMeta, &r.hash, &r.traceparent); err != nil {
		return r, err
	}
	r.DeadAt = time.UnixMicro(at).UTC()
	md, err := decodeMetadata(r.rawMeta)
	if err != nil {
		md = map[string]string{}
	}
	r.Metadata = md
	return r, nil
}

// Dead returns up to limit dead rows of topic ("" for every topic), oldest
// first. limit <= 0 means 100.
func (o *Outbox) Dead(ctx context.Context, topic string, limit int) ([]DeadRow, error) {
	if limit <= 0 {
		limit = 100
	}
	recs, err := o.deadRecords(ctx, o.db, topic, nil, limit, false)
	if err != nil {
		return nil, o.wrap("dead", err)
	}
	out := make([]DeadRow, len(recs))
	for i, r := range recs {
		out[i] = r.DeadRow
	}
	return out, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (o *Outbox) deadRecords(ctx context.Context, q queryer, topic string, ids []int64, limit int, lock bool) ([]deadRecord, error) {
	stmt := `SELECT ` + deadCols + ` FROM {D} WHERE 1 = 1`
	var args []any
	if topic != "" {
		stmt += ` AND topic = ?`
		args = append(args, topic)
	}
	if len(ids) > 0 {
		stmt += ` AND id IN (` + intList(ids) + `)`
	}
	stmt += ` ORDER BY id`
	if limit > 0 {
		stmt += fmt.Sprintf(` LIMIT %d`, limit)
	}
	if lock && o.dialect != "sqlite" {
		stmt += ` FOR UPDATE`
	}
	rows, err := q.QueryContext(ctx, o.x.expand(stmt), args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []deadRecord
	for rows.Next() {
		r, err := scanDead(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Requeue moves dead rows back into the outbox, in one transaction: the rows
// with the given ids (of topic, unless topic is ""), or with no ids every
// dead row of topic (topic "" with no ids is refused). Each gets a new id,
// after the current rows of its key, and zero attempts; relays publish it
// again with its UUID. It returns how many rows were moved.
func (o *Outbox) Requeue(ctx context.Context, topic string, ids ...int64) (int, error) {
	if topic == "" && len(ids) == 0 {
		return 0, fmt.Errorf("%w: Requeue needs a topic or ids", ErrInvalidMessage)
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, o.wrap("requeue", err)
	}
	defer func() { _ = tx.Rollback() }()
	recs, err := o.deadRecords(ctx, tx, topic, ids, 0, true)
	if err != nil || len(recs) == 0 {
		return 0, o.wrap("requeue", err)
	}
	rows := make([]newRow, len(recs))
	moved := make([]int64, len(recs))
	for i, r := range recs {
		rows[i] = newRow{
			uuid: r.UUID, topic: r.Topic, key: r.Key, hash: r.hash,
			payload: r.Payload, metadata: r.rawMeta, traceparent: r.traceparent,
		}
		if rows[i].payload == nil {
			rows[i].payload = []byte{}
		}
		moved[i] = r.ID
	}
	if err := o.insertRows(ctx, tx, rows); err != nil {
		return 0, o.wrap("requeue", err)
	}
	if _, err := tx.ExecContext(ctx, o.x.expand(`DELETE FROM {D} WHERE id IN (`+intList(moved)+`)`)); err != nil {
		return 0, o.wrap("requeue", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, o.wrap("requeue", err)
	}
	return len(recs), nil
}
