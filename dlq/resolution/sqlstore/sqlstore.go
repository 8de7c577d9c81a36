package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	dedupsql "github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/internal/check"
)

// DefaultTable is the default of [Options.Table].
const DefaultTable = "idempo_dlq_resolutions"

// Options configures a [Store]. A nil *Options means all defaults.
type Options struct {
	// Dialect is the database's dialect (dedup/sqlstore's Postgres, MySQL
	// or SQLite). Defaults to the one detected from db.Driver(), as
	// dedup/sqlstore.New detects it.
	Dialect dedupsql.Dialect
	// Table is the table's name, optionally schema-qualified, under the
	// rules of dedup/sqlstore.ValidateTable. Defaults to [DefaultTable].
	Table string
}

// Store is a [resolution.Store] on a SQL database. It is safe for
// concurrent use by many goroutines and processes sharing the table.
type Store struct {
	db      *sql.DB
	dialect dedupsql.Dialect
	q       queries
}

var _ resolution.Store = (*Store)(nil)

type queries struct {
	schema                              string
	insert, takeover, selectOne, finish string
	abort, resolutions, table           string
}

// New returns a store on db; it does not touch the database (call
// [Store.Migrate] first). The caller keeps ownership of db.
func New(db *sql.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: nil *sql.DB")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Dialect == "" {
		d, err := dedupsql.DetectDialect(db)
		if err != nil {
			return nil, err
		}
		o.Dialect = d
	}
	switch o.Dialect {
	case dedupsql.Postgres, dedupsql.MySQL, dedupsql.SQLite:
	default:
		return nil, fmt.Errorf("sqlstore: Options.Dialect %q is not one of %q, %q, %q", o.Dialect, dedupsql.Postgres, dedupsql.MySQL, dedupsql.SQLite)
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if err := dedupsql.ValidateTable(o.Table); err != nil {
		return nil, fmt.Errorf("%w (Options.Table)", err)
	}
	return &Store{db: db, dialect: o.Dialect, q: build(o.Dialect, o.Table)}, nil
}

func build(d dedupsql.Dialect, table string) queries {
	quote := `"`
	if d == dedupsql.MySQL {
		quote = "`"
	}
	parts := strings.Split(table, ".")
	for i, p := range parts {
		parts[i] = quote + p + quote
	}
	t := strings.Join(parts, ".")
	var now, key, insert, conflict string
	switch d {
	case dedupsql.Postgres:
		now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
		key = "VARCHAR(255)"
		insert, conflict = "INSERT INTO", " ON CONFLICT (dlq, entry_id) DO NOTHING"
	case dedupsql.MySQL:
		now = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"
		key = "VARBINARY(1020)"
		insert = "INSERT IGNORE INTO"
	default:
		now = "CAST(unixepoch('subsec') * 1000000 AS INTEGER)"
		key = "TEXT"
		insert, conflict = "INSERT INTO", " ON CONFLICT (dlq, entry_id) DO NOTHING"
	}
	ph := func(s string) string {
		s = strings.NewReplacer("{T}", t, "{NOW}", now).Replace(s)
		if d != dedupsql.Postgres {
			return s
		}
		var b strings.Builder
		n := 0
		for _, r := range s {
			if r == '?' {
				n++
				fmt.Fprintf(&b, "$%d", n)
				continue
			}
			b.WriteRune(r)
		}
		return b.String()
	}
	cols := "state, by_whom, at_us, lease_until_us, outcome"
	return queries{
		table: t,
		schema: ph(`CREATE TABLE IF NOT EXISTS {T} (
	dlq ` + key + ` NOT NULL,
	entry_id ` + key + ` NOT NULL,
	state SMALLINT NOT NULL,
	token VARCHAR(64) NOT NULL,
	by_whom VARCHAR(255) NOT NULL,
	at_us BIGINT NOT NULL,
	lease_until_us BIGINT NOT NULL,
	outcome VARCHAR(16) NOT NULL,
	PRIMARY KEY (dlq, entry_id)
)`),
		insert: ph(insert + ` {T} (dlq, entry_id, state, token, by_whom, at_us, lease_until_us, outcome)
	VALUES (?, ?, 1, ?, ?, {NOW}, {NOW} + ?, '')` + conflict),
		takeover: ph(`UPDATE {T} SET token = ?, by_whom = ?, at_us = {NOW}, lease_until_us = {NOW} + ?
	WHERE dlq = ? AND entry_id = ? AND state = 1 AND lease_until_us <= {NOW}`),
		selectOne: ph(`SELECT ` + cols + `, token, {NOW} FROM {T} WHERE dlq = ? AND entry_id = ?`),
		finish: ph(`UPDATE {T} SET state = 2, outcome = ?, at_us = {NOW}, lease_until_us = 0
	WHERE dlq = ? AND entry_id = ? AND token = ? AND state = 1`),
		abort:       ph(`DELETE FROM {T} WHERE dlq = ? AND entry_id = ? AND token = ? AND state = 1`),
		resolutions: ph(`SELECT entry_id, ` + cols + ` FROM {T} WHERE dlq = ? AND (state = 2 OR lease_until_us > {NOW})`),
	}
}

// Migrate creates the table if it does not exist. It is idempotent and
// safe to run from many processes at once.
func (s *Store) Migrate(ctx context.Context) error {
	if s.dialect != dedupsql.Postgres {
		_, err := s.db.ExecContext(ctx, s.q.schema)
		return s.wrap("migrate", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap("migrate", err)
	}
	defer func() { _ = tx.Rollback() }()
	h := fnv.New64a()
	_, _ = h.Write([]byte("idempo/dlq/resolution/sqlstore.Migrate:" + s.q.table))
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return s.wrap("migrate", err)
	}
	if _, err := tx.ExecContext(ctx, s.q.schema); err != nil {
		return s.wrap("migrate", err)
	}
	return s.wrap("migrate", tx.Commit())
}

func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlstore: %s %s: %w", s.dialect, op, err)
}

// row is one row as read.
type row struct {
	state          int
	by, outcome    string
	at, leaseUntil int64
}

func (r row) record() resolution.Record {
	out := resolution.Record{Status: resolution.InProgress, By: r.by, At: time.UnixMicro(r.at)}
	if r.state == 2 {
		out.Status, out.Outcome = resolution.Resolved, resolution.Outcome(r.outcome)
	} else {
		out.LeaseUntil = time.UnixMicro(r.leaseUntil)
	}
	return out
}

// one reads the entry's row; ok is false when there is none.
func (s *Store) one(ctx context.Context, k resolution.Key) (r row, token string, now int64, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, s.q.selectOne, k.DLQ, k.EntryID).Scan(&r.state, &r.by, &r.at, &r.leaseUntil, &r.outcome, &token, &now)
	if errors.Is(err, sql.ErrNoRows) {
		return r, "", 0, false, nil
	}
	return r, token, now, err == nil, err
}

func affected(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Begin implements [resolution.Store.Begin].
func (s *Store) Begin(ctx context.Context, k resolution.Key, by string, lease time.Duration) (resolution.Begun, error) {
	if err := check.Begin(k, by, lease); err != nil {
		return resolution.Begun{}, err
	}
	token := check.NewToken()
	us := max(lease.Microseconds(), 1)
	for range 10 {
		ok, err := affected(s.db.ExecContext(ctx, s.q.insert, k.DLQ, k.EntryID, token, by, us))
		if err != nil {
			return resolution.Begun{}, s.wrap("begin", err)
		}
		if !ok { // taken: take it over if its hold ran out (read back below)
			if _, err := s.db.ExecContext(ctx, s.q.takeover, token, by, us, k.DLQ, k.EntryID); err != nil {
				return resolution.Begun{}, s.wrap("begin", err)
			}
		}
		r, held, now, found, err := s.one(ctx, k)
		if err != nil {
			return resolution.Begun{}, s.wrap("begin", err)
		}
		switch {
		case !found:
			continue // aborted meanwhile: try again
		case held == token && r.state == 1:
			return resolution.Begun{Status: resolution.Acquired, Token: token, Record: r.record()}, nil
		case r.state == 2:
			return resolution.Begun{Status: resolution.Resolved, Record: r.record()}, nil
		case r.leaseUntil > now:
			return resolution.Begun{Status: resolution.InProgress, Record: r.record()}, nil
		}
		// Another's hold ran out between the statements: try again.
	}
	return resolution.Begun{}, s.wrap("begin", fmt.Errorf("entry %s/%s changed hands ten times during one call", k.DLQ, k.EntryID))
}

// Finish implements [resolution.Store.Finish].
func (s *Store) Finish(ctx context.Context, k resolution.Key, token string, outcome resolution.Outcome) (resolution.Record, error) {
	if err := check.Finish(k, token, outcome); err != nil {
		return resolution.Record{}, err
	}
	if _, err := s.db.ExecContext(ctx, s.q.finish, string(outcome), k.DLQ, k.EntryID, token); err != nil {
		return resolution.Record{}, s.wrap("finish", err)
	}
	r, held, _, found, err := s.one(ctx, k)
	if err != nil {
		return resolution.Record{}, s.wrap("finish", err)
	}
	if !found || held != token || r.state != 2 {
		return resolution.Record{}, fmt.Errorf("%w: %s/%s", resolution.ErrLeaseLost, k.DLQ, k.EntryID)
	}
	return r.record(), nil
}

// Abort implements [resolution.Store.Abort].
func (s *Store) Abort(ctx context.Context, k resolution.Key, token string) error {
	if err := check.Token(k, token); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q.abort, k.DLQ, k.EntryID, token)
	return s.wrap("abort", err)
}

// Resolutions implements [resolution.Store.Resolutions]: one SELECT.
func (s *Store) Resolutions(ctx context.Context, dlq string) (map[string]resolution.Record, error) {
	if err := check.DLQ(dlq); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q.resolutions, dlq)
	if err != nil {
		return nil, s.wrap("resolutions", err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string]resolution.Record{}
	for rows.Next() {
		var (
			id string
			r  row
		)
		if err := rows.Scan(&id, &r.state, &r.by, &r.at, &r.leaseUntil, &r.outcome); err != nil {
			return nil, s.wrap("resolutions", err)
		}
		out[id] = r.record()
	}
	return out, s.wrap("resolutions", rows.Err())
}
