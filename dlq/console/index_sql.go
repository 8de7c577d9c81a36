package console

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	dedupsql "github.com/idempo/idempo/dedup/sqlstore"
)

// DefaultTablePrefix is the default of [SQLIndexOptions.TablePrefix].
const DefaultTablePrefix = "idempo_dlq_console"

// SQLIndexOptions configures [NewSQLIndex]. A nil *SQLIndexOptions means
// all defaults.
type SQLIndexOptions struct {
	// Dialect is the database's dialect (dedup/sqlstore's Postgres, MySQL
	// or SQLite). Defaults to the one detected from db.Driver().
	Dialect dedupsql.Dialect
	// TablePrefix names the index's four tables, PREFIX_entries,
	// PREFIX_groups, PREFIX_ends and PREFIX_jobs, optionally schema-qualified, under the rules of
	// dedup/sqlstore.ValidateTable. Defaults to [DefaultTablePrefix].
	TablePrefix string
}

// NewSQLIndex returns an index in db, the resolution store's database
// (PostgreSQL, MySQL/MariaDB or SQLite), creating its tables if they do not
// exist (safe from many processes at once). The caller keeps ownership of
// db. The index survives restarts: the console then reads each DLQ only
// from where it stopped.
func NewSQLIndex(ctx context.Context, db *sql.DB, opts *SQLIndexOptions) (Index, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: NewSQLIndex: nil *sql.DB", ErrInvalidConfig)
	}
	var o SQLIndexOptions
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
		return nil, fmt.Errorf("%w: SQLIndexOptions.Dialect %q is not one of %q, %q, %q", ErrInvalidConfig, o.Dialect, dedupsql.Postgres, dedupsql.MySQL, dedupsql.SQLite)
	}
	if o.TablePrefix == "" {
		o.TablePrefix = DefaultTablePrefix
	}
	if err := dedupsql.ValidateTable(o.TablePrefix + "_entries"); err != nil {
		return nil, fmt.Errorf("%w: SQLIndexOptions.TablePrefix: %w", ErrInvalidConfig, err)
	}
	x := &sqlIndex{db: db, d: o.Dialect}
	x.build(o.TablePrefix)
	if err := x.migrate(ctx); err != nil {
		return nil, err
	}
	return x, nil
}

type sqlIndex struct {
	db                                    *sql.DB
	d                                     dedupsql.Dialect
	entries, ends, groupsT, jobsT, prefix string
	schema                                []string
}

var _ Index = (*sqlIndex)(nil)

func (x *sqlIndex) quote(name string) string {
	q := `"`
	if x.d == dedupsql.MySQL {
		q = "`"
	}
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = q + p + q
	}
	return strings.Join(parts, ".")
}

// entryCols are the entries table's columns, in the order rows are
// written and read.
const entryCols = `dlq, entry_id, position, event_id, original_topic, handler, scope, reason, error_class, error_text, group_key, group_id, problems, at_us, digest, seq, resolution, resolved_by`

func (x *sqlIndex) build(prefix string) {
	x.prefix = prefix
	x.entries, x.ends, x.groupsT = x.quote(prefix+"_entries"), x.quote(prefix+"_ends"), x.quote(prefix+"_groups")
	x.jobsT = x.quote(prefix + "_jobs")
	key, text, small := "VARCHAR(255)", "TEXT", "VARCHAR(64)"
	if x.d == dedupsql.MySQL {
		key = "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
		small = "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
	}
	base := prefix[strings.LastIndexByte(prefix, '.')+1:]
	idx := func(name, cols string) string {
		on := x.entries
		if x.d == dedupsql.MySQL {
			return "CREATE INDEX " + x.quote(base+"_"+name) + " ON " + on + " (" + cols + ")"
		}
		schema := ""
		if i := strings.LastIndexByte(prefix, '.'); i >= 0 && x.d == dedupsql.SQLite {
			schema = x.quote(prefix[:i]) + "."
		}
		return "CREATE INDEX IF NOT EXISTS " + schema + x.quote(base+"_"+name) + " ON " + on + " (" + cols + ")"
	}
	x.schema = []string{
		`CREATE TABLE IF NOT EXISTS ` + x.entries + ` (
	dlq ` + key + ` NOT NULL,
	entry_id ` + key + ` NOT NULL,
	position ` + key + ` NOT NULL,
	event_id ` + key + ` NOT NULL,
	original_topic ` + key + ` NOT NULL,
	handler ` + key + ` NOT NULL,
	scope ` + key + ` NOT NULL,
	reason ` + small + ` NOT NULL,
	error_class ` + small + ` NOT NULL,
	error_text ` + text + ` NOT NULL,
	group_key ` + text + ` NOT NULL,
	group_id ` + small + ` NOT NULL,
	problems ` + text + ` NOT NULL,
	at_us BIGINT NOT NULL,
	digest BIGINT NOT NULL,
	seq BIGINT NOT NULL,
	resolution ` + small + ` NOT NULL,
	resolved_by ` + key + ` NOT NULL,
	PRIMARY KEY (dlq, entry_id)
)`,
		`CREATE TABLE IF NOT EXISTS ` + x.ends + ` (
	dlq ` + key + ` NOT NULL,
	part ` + small + ` NOT NULL,
	end_offset BIGINT NOT NULL,
	PRIMARY KEY (dlq, part)
)`,
		`CREATE TABLE IF NOT EXISTS ` + x.groupsT + ` (
	dlq ` + key + ` NOT NULL,
	group_id ` + small + ` NOT NULL,
	reason ` + small + ` NOT NULL,
	error_class ` + small + ` NOT NULL,
	handler ` + key + ` NOT NULL,
	group_key ` + text + ` NOT NULL,
	sample ` + text + ` NOT NULL,
	PRIMARY KEY (dlq, group_id)
)`,
		`CREATE TABLE IF NOT EXISTS ` + x.jobsT + ` (
	id ` + small + ` NOT NULL,
	state ` + text + ` NOT NULL,
	PRIMARY KEY (id)
)`,
		idx("seq", "dlq, seq"),
		// The overview's counts: an index-only scan in group order.
		idx("by_group", "dlq, group_id, resolution, at_us"),
		idx("event", "dlq, event_id"),
		// The overview's counts over time.
		idx("at", "dlq, at_us"),
	}
}

// ph rewrites '?' placeholders for PostgreSQL.
func (x *sqlIndex) ph(s string) string {
	if x.d != dedupsql.Postgres {
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

func (x *sqlIndex) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("console: index (%s) %s: %w", x.d, op, err)
}

func (x *sqlIndex) migrate(ctx context.Context) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return x.wrap("migrate", err)
	}
	defer func() { _ = tx.Rollback() }()
	if x.d == dedupsql.Postgres {
		h := fnv.New64a()
		_, _ = h.Write([]byte("idempo/dlq/console.migrate:" + x.prefix))
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil { //nolint:gosec // a lock key
			return x.wrap("migrate", err)
		}
	}
	for _, s := range x.schema {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			if x.d == dedupsql.MySQL && strings.Contains(err.Error(), "Duplicate key name") {
				continue // MySQL has no CREATE INDEX IF NOT EXISTS: the index exists
			}
			return x.wrap("migrate", err)
		}
	}
	return x.wrap("migrate", tx.Commit())
}

func (x *sqlIndex) state(ctx context.Context, dlq string) (indexState, error) {
	st := indexState{ends: map[string]int64{}, digests: map[string]int64{}}
	rows, err := x.db.QueryContext(ctx, x.ph(`SELECT part, end_offset FROM `+x.ends+` WHERE dlq = ?`), dlq)
	if err != nil {
		return st, x.wrap("read the ends", err)
	}
	for rows.Next() {
		var (
			p   string
			off int64
		)
		if err := rows.Scan(&p, &off); err != nil {
			_ = rows.Close()
			return st, x.wrap("read the ends", err)
		}
		st.ends[p] = off
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return st, x.wrap("read the ends", err)
	}
	rows, err = x.db.QueryContext(ctx, x.ph(`SELECT entry_id, digest, seq FROM `+x.entries+` WHERE dlq = ?`), dlq)
	if err != nil {
		return st, x.wrap("read the digests", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var (
			id       string
			dig, seq int64
		)
		if err := rows.Scan(&id, &dig, &seq); err != nil {
			return st, x.wrap("read the digests", err)
		}
		st.digests[id] = dig
		st.seq = max(st.seq, seq)
	}
	return st, x.wrap("read the digests", rows.Err())
}

// insertBatch is how many rows one INSERT writes.
const insertBatch = 200

func (x *sqlIndex) add(ctx context.Context, dlq string, rs []row, ends map[string]int64) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return x.wrap("add", err)
	}
	defer func() { _ = tx.Rollback() }()
	const ncols = 18
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", ncols), ", ") + ")"
	for start := 0; start < len(rs); start += insertBatch {
		batch := rs[start:min(start+insertBatch, len(rs))]
		args := make([]any, 0, len(batch)*ncols)
		for _, r := range batch {
			args = append(args, dlq, r.ID, r.Position, r.EventID, r.OriginalTopic, r.Handler, r.Scope,
				r.Reason, r.ErrorClass, r.Error, r.GroupKey, r.Group, r.Problems, micros(r.At), r.Digest, r.Seq, r.Resolution, r.By)
		}
		q := `INSERT INTO ` + x.entries + ` (` + entryCols + `) VALUES ` + strings.TrimSuffix(strings.Repeat(one+", ", len(batch)), ", ")
		if x.d == dedupsql.MySQL {
			q = strings.Replace(q, "INSERT INTO", "INSERT IGNORE INTO", 1)
		} else {
			q += " ON CONFLICT (dlq, entry_id) DO NOTHING"
		}
		if _, err := tx.ExecContext(ctx, x.ph(q), args...); err != nil {
			return x.wrap("add", err)
		}
	}
	seen := map[string]bool{}
	for _, r := range rs {
		if seen[r.Group] {
			continue
		}
		seen[r.Group] = true
		q := `INSERT INTO ` + x.groupsT + ` (dlq, group_id, reason, error_class, handler, group_key, sample) VALUES (?, ?, ?, ?, ?, ?, ?)`
		if x.d == dedupsql.MySQL {
			q = strings.Replace(q, "INSERT INTO", "INSERT IGNORE INTO", 1)
		} else {
			q += " ON CONFLICT (dlq, group_id) DO NOTHING"
		}
		if _, err := tx.ExecContext(ctx, x.ph(q), dlq, r.Group, r.Reason, r.ErrorClass, r.Handler, r.GroupKey, r.Error); err != nil {
			return x.wrap("add", err)
		}
	}
	for p, off := range ends {
		var q string
		switch x.d {
		case dedupsql.MySQL:
			q = `INSERT INTO ` + x.ends + ` (dlq, part, end_offset) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE end_offset = VALUES(end_offset)`
		default:
			q = `INSERT INTO ` + x.ends + ` (dlq, part, end_offset) VALUES (?, ?, ?) ON CONFLICT (dlq, part) DO UPDATE SET end_offset = excluded.end_offset`
		}
		if _, err := tx.ExecContext(ctx, x.ph(q), dlq, p, off); err != nil {
			return x.wrap("add", err)
		}
	}
	return x.wrap("add", tx.Commit())
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

func (x *sqlIndex) marks(ctx context.Context, dlq string) (map[string]mark, error) {
	rows, err := x.db.QueryContext(ctx, x.ph(`SELECT entry_id, resolution, resolved_by FROM `+x.entries+` WHERE dlq = ? AND resolution <> ''`), dlq)
	if err != nil {
		return nil, x.wrap("read the marks", err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string]mark{}
	for rows.Next() {
		var (
			id string
			m  mark
		)
		if err := rows.Scan(&id, &m.Resolution, &m.By); err != nil {
			return nil, x.wrap("read the marks", err)
		}
		out[id] = m
	}
	return out, x.wrap("read the marks", rows.Err())
}

// setMarks updates the entries sharing a mark together, in one transaction.
func (x *sqlIndex) setMarks(ctx context.Context, dlq string, changes map[string]mark) error {
	if len(changes) == 0 {
		return nil
	}
	byMark := map[mark][]string{}
	for id, m := range changes {
		byMark[m] = append(byMark[m], id)
	}
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return x.wrap("set the marks", err)
	}
	defer func() { _ = tx.Rollback() }()
	for m, ids := range byMark {
		for start := 0; start < len(ids); start += insertBatch {
			batch := ids[start:min(start+insertBatch, len(ids))]
			args := []any{m.Resolution, m.By, dlq}
			for _, id := range batch {
				args = append(args, id)
			}
			q := `UPDATE ` + x.entries + ` SET resolution = ?, resolved_by = ? WHERE dlq = ? AND entry_id IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(batch)), ", ") + `)`
			if _, err := tx.ExecContext(ctx, x.ph(q), args...); err != nil {
				return x.wrap("set the marks", err)
			}
		}
	}
	return x.wrap("set the marks", tx.Commit())
}

const unresolvedSQL = `resolution IN ('', '` + inProgress + `')`

// groups counts in one index-only scan of the unresolved entries, and
// reads what describes each group from the groups table.
func (x *sqlIndex) groups(ctx context.Context, dlq string, since []time.Time) ([]group, error) {
	recent := ""
	args := []any{}
	for _, t := range since {
		recent += ", SUM(CASE WHEN at_us >= ? THEN 1 ELSE 0 END)"
		args = append(args, micros(t))
	}
	args = append(args, dlq)
	rows, err := x.db.QueryContext(ctx, x.ph(`SELECT group_id, COUNT(*), MIN(at_us), MAX(at_us)`+recent+`
FROM `+x.entries+` WHERE dlq = ? AND `+unresolvedSQL+` GROUP BY group_id`), args...)
	if err != nil {
		return nil, x.wrap("read the groups", err)
	}
	defer func() { _ = rows.Close() }()
	var out []group
	at := map[string]int{}
	for rows.Next() {
		g := group{DLQ: dlq, Recent: make([]int, len(since))}
		var first, last int64
		dst := []any{&g.ID, &g.Count, &first, &last}
		for i := range g.Recent {
			dst = append(dst, &g.Recent[i])
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, x.wrap("read the groups", err)
		}
		g.First, g.Last = fromMicros(first), fromMicros(last)
		at[g.ID] = len(out)
		out = append(out, g)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, x.wrap("read the groups", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	desc, err := x.db.QueryContext(ctx, x.ph(`SELECT group_id, reason, error_class, handler, group_key, sample FROM `+x.groupsT+` WHERE dlq = ?`), dlq)
	if err != nil {
		return nil, x.wrap("read the groups", err)
	}
	defer func() { _ = desc.Close() }()
	for desc.Next() {
		var (
			id string
			g  group
		)
		if err := desc.Scan(&id, &g.Reason, &g.ErrorClass, &g.Handler, &g.Key, &g.Sample); err != nil {
			return nil, x.wrap("read the groups", err)
		}
		if i, ok := at[id]; ok {
			out[i].Reason, out[i].ErrorClass, out[i].Handler, out[i].Key, out[i].Sample = g.Reason, g.ErrorClass, g.Handler, g.Key, g.Sample
		}
	}
	if err := desc.Err(); err != nil {
		return nil, x.wrap("read the groups", err)
	}
	sortGroups(out)
	return out, nil
}

func (x *sqlIndex) hourly(ctx context.Context, dlq string, from time.Time) (map[int64]int, error) {
	div := "/" // integer division of BIGINTs
	if x.d == dedupsql.MySQL {
		div = "DIV"
	}
	rows, err := x.db.QueryContext(ctx, x.ph(`SELECT at_us `+div+` 3600000000 AS h, COUNT(*) FROM `+x.entries+`
WHERE dlq = ? AND at_us >= ? GROUP BY h`), dlq, micros(from))
	if err != nil {
		return nil, x.wrap("count the entries per hour", err)
	}
	defer func() { _ = rows.Close() }()
	out := map[int64]int{}
	for rows.Next() {
		var (
			h int64
			n int
		)
		if err := rows.Scan(&h, &n); err != nil {
			return nil, x.wrap("count the entries per hour", err)
		}
		out[h] = n
	}
	return out, x.wrap("count the entries per hour", rows.Err())
}

// likePattern escapes s for LIKE ... ESCAPE '!' and wraps it in %.
func likePattern(s string) string {
	r := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

func (x *sqlIndex) list(ctx context.Context, q query) ([]row, int, error) {
	where := []string{"dlq = ?"}
	args := []any{q.DLQ}
	if !q.All {
		where = append(where, unresolvedSQL)
	}
	for _, f := range []struct{ col, v string }{{"reason", q.Reason}, {"error_class", q.ErrorClass}, {"handler", q.Handler}, {"group_id", q.Group}} {
		if f.v != "" {
			where = append(where, f.col+" = ?")
			args = append(args, f.v)
		}
	}
	if !q.Since.IsZero() {
		where = append(where, "at_us >= ?")
		args = append(args, q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		where = append(where, "at_us < ?")
		args = append(args, q.Until.UnixMicro())
	}
	if q.Search != "" {
		where = append(where, "(entry_id = ? OR event_id = ? OR LOWER(error_text) LIKE ? ESCAPE '!')")
		args = append(args, q.Search, q.Search, likePattern(q.Search))
	}
	cond := strings.Join(where, " AND ")
	var total int
	if err := x.db.QueryRowContext(ctx, x.ph(`SELECT COUNT(*) FROM `+x.entries+` WHERE `+cond), args...).Scan(&total); err != nil {
		return nil, 0, x.wrap("count the entries", err)
	}
	rows, err := x.db.QueryContext(ctx, x.ph(`SELECT `+entryCols+` FROM `+x.entries+` WHERE `+cond+fmt.Sprintf(` ORDER BY seq DESC LIMIT %d OFFSET %d`, q.Limit, q.Offset)), args...)
	if err != nil {
		return nil, 0, x.wrap("list the entries", err)
	}
	defer func() { _ = rows.Close() }()
	var out []row
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, 0, x.wrap("list the entries", err)
		}
		out = append(out, r)
	}
	return out, total, x.wrap("list the entries", rows.Err())
}

func scanRow(s interface{ Scan(...any) error }) (row, error) {
	var (
		r  row
		at int64
	)
	err := s.Scan(&r.DLQ, &r.ID, &r.Position, &r.EventID, &r.OriginalTopic, &r.Handler, &r.Scope, &r.Reason, &r.ErrorClass,
		&r.Error, &r.GroupKey, &r.Group, &r.Problems, &at, &r.Digest, &r.Seq, &r.Resolution, &r.By)
	r.At = fromMicros(at)
	return r, err
}

func (x *sqlIndex) get(ctx context.Context, dlq, id string) (row, bool, error) {
	r, err := scanRow(x.db.QueryRowContext(ctx, x.ph(`SELECT `+entryCols+` FROM `+x.entries+` WHERE dlq = ? AND entry_id = ?`), dlq, id))
	if errors.Is(err, sql.ErrNoRows) {
		return row{}, false, nil
	}
	if err != nil {
		return row{}, false, x.wrap("read an entry", err)
	}
	return r, true, nil
}

func (x *sqlIndex) saveJob(ctx context.Context, id string, state []byte) error {
	q := `INSERT INTO ` + x.jobsT + ` (id, state) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state`
	if x.d == dedupsql.MySQL {
		q = `INSERT INTO ` + x.jobsT + ` (id, state) VALUES (?, ?) ON DUPLICATE KEY UPDATE state = VALUES(state)`
	}
	_, err := x.db.ExecContext(ctx, x.ph(q), id, string(state))
	return x.wrap("save a job", err)
}

func (x *sqlIndex) jobs(ctx context.Context) ([][]byte, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT state FROM `+x.jobsT)
	if err != nil {
		return nil, x.wrap("read the jobs", err)
	}
	defer func() { _ = rows.Close() }()
	var out [][]byte
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, x.wrap("read the jobs", err)
		}
		out = append(out, []byte(s))
	}
	return out, x.wrap("read the jobs", rows.Err())
}
