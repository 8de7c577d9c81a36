package sqlstore

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Record states as stored in the state column.
const (
	stateInProgress   = 1
	stateReleased     = 2
	stateDueForDLQ    = 3
	stateDone         = 4
	stateDeadLettered = 5
	// stateInInbox marks, on SQLite, a record held by an open inbox
	// transaction. Only that transaction ever sees it: it is written by the
	// transaction's first statement and replaced by stateDone before the
	// commit, so a rollback of any kind, SQLite's own included, takes it
	// back.
	stateInInbox = 6
)

// rowCols are the columns scanRow reads: the record with its remaining
// expiry and lease in µs by the database clock.
const rowCols = `state, token, deliveries, fingerprint, failure, replay_id, {REM:expires_at}, {REM:lease_until}`

// queries holds every statement of one dialect and table, with the
// dialect's placeholders.
type queries struct {
	schema []string // CREATE statements, in order

	insert            string // new record; affects 0 rows (or fails with a duplicate key on MySQL) if the key exists
	insertIsPlain     bool   // MySQL: plain INSERT, a duplicate key error means "exists"
	selectRow         string // the record with remaining expiry and lease in µs by the database clock
	lockRow           string // SELECT ... FOR UPDATE (or SQLite's write-lock-taking no-op UPDATE)
	lockIsUpdate      bool
	acquire           string
	extend            string
	finish            string
	release           string
	dueForDLQ         string
	heldState         string
	inboxHold         string // the inbox transaction's first statement: takes the record, fenced by token (see inboxHoldIsUpdate)
	inboxHoldIsUpdate bool   // SQLite: inboxHold is an UPDATE (in progress → in inbox); else a shared-lock SELECT returning one value
	inbox             string // the inbox's completion, matching only while the transaction that ran inboxHold is open
	cleanup           string
}

// dialectSQL builds a dialect's statements from templates written with
// '?' placeholders and these macros:
//
//	{T}        the quoted table
//	{NOW}      the database clock
//	{PLUS}     the database clock plus a µs parameter (consumes one '?')
//	{MAX}      GREATEST or MAX
//	{REM:col}  µs from the database clock to col
type dialectSQL struct {
	d     Dialect
	table string // quoted
}

func quoteIdent(d Dialect, name string) string {
	q := `"`
	if d == MySQL {
		q = "`"
	}
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = q + p + q
	}
	return strings.Join(parts, ".")
}

// indexName returns the quoted name of the expiry index and the quoted
// table as it appears in CREATE INDEX ... ON.
func indexNames(d Dialect, table string) (index, on string) {
	parts := strings.Split(table, ".")
	base := parts[len(parts)-1] + "_expires_at"
	switch {
	case d == SQLite && len(parts) == 2:
		// SQLite qualifies the index, not the table, with the schema.
		return quoteIdent(d, parts[0]+"."+base), quoteIdent(d, parts[1])
	default:
		return quoteIdent(d, base), quoteIdent(d, table)
	}
}

func (x dialectSQL) expand(tmpl string) string {
	var now, plus, greatest string
	switch x.d {
	case Postgres:
		now = "clock_timestamp()"
		plus = "(clock_timestamp() + CAST(? AS double precision) * interval '1 microsecond')"
		greatest = "GREATEST"
	case MySQL:
		now = "UTC_TIMESTAMP(6)"
		plus = "(UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)"
		greatest = "GREATEST"
	case SQLite:
		now = "CAST(unixepoch('subsec') * 1000000 AS INTEGER)"
		plus = "(CAST(unixepoch('subsec') * 1000000 AS INTEGER) + ?)"
		greatest = "MAX"
	}
	r := strings.NewReplacer("{T}", x.table, "{NOW}", now, "{PLUS}", plus, "{MAX}", greatest)
	s := r.Replace(tmpl)
	for {
		i := strings.Index(s, "{REM:")
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '}') + i
		col := s[i+5 : j]
		var rem string
		switch x.d {
		case Postgres:
			rem = "CAST(EXTRACT(EPOCH FROM (" + col + " - clock_timestamp())) * 1000000 AS bigint)"
		case MySQL:
			rem = "TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), " + col + ")"
		case SQLite:
			rem = "(" + col + " - " + now + ")"
		}
		s = s[:i] + rem + s[j+1:]
	}
	if x.d == Postgres {
		s = rebindDollar(s)
	}
	return s
}

// rebindDollar turns '?' placeholders into $1, $2, … (no statement here
// holds a literal '?').
func rebindDollar(s string) string {
	var b strings.Builder
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Schema returns the SQL that creates the dedup table and its expiry index
// for dialect, as [Store.Migrate] runs it: statements separated by ";\n",
// each idempotent (IF NOT EXISTS). A DBA may run it by hand and give the
// application no DDL rights. It fails for an unknown dialect or a table name
// that [ValidateTable] rejects.
func Schema(dialect Dialect, table string) (string, error) {
	stmts, err := schemaStatements(dialect, table)
	if err != nil {
		return "", err
	}
	return strings.Join(stmts, ";\n") + ";\n", nil
}

func schemaStatements(d Dialect, table string) ([]string, error) {
	if !d.valid() {
		return nil, fmt.Errorf("sqlstore: unknown dialect %q", d)
	}
	if err := ValidateTable(table); err != nil {
		return nil, err
	}
	t := quoteIdent(d, table)
	idx, on := indexNames(d, table)
	switch d {
	case Postgres:
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
    key_hash    bytea       NOT NULL PRIMARY KEY, -- SHA-256 of dedup.Key.Encode()
    scope       text        NOT NULL,
    event_id    bytea       NOT NULL,
    state       smallint    NOT NULL,             -- 1 in progress, 2 released, 3 due for the DLQ, 4 done, 5 dead-lettered
    token       bytea       NOT NULL,             -- owner token of the last claim
    lease_until timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,             -- the record is forgotten from then on
    deliveries  integer     NOT NULL,
    fingerprint bytea,
    failure     bytea,
    replay_id   bytea
)`,
			`CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + on + ` (expires_at)`,
		}, nil
	case MySQL:
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
    key_hash    BINARY(32)      NOT NULL,          -- SHA-256 of dedup.Key.Encode()
    scope       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_id    VARBINARY(4096) NOT NULL,
    state       TINYINT         NOT NULL,          -- 1 in progress, 2 released, 3 due for the DLQ, 4 done, 5 dead-lettered
    token       VARBINARY(255)  NOT NULL,          -- owner token of the last claim
    lease_until DATETIME(6)     NOT NULL,          -- UTC
    expires_at  DATETIME(6)     NOT NULL,          -- UTC; the record is forgotten from then on
    deliveries  INT             NOT NULL,
    fingerprint VARBINARY(64)   NULL,
    failure     MEDIUMBLOB      NULL,
    replay_id   VARBINARY(128)  NULL,
    PRIMARY KEY (key_hash),
    INDEX ` + idx + ` (expires_at)
) ENGINE=InnoDB`,
		}, nil
	default:
		return []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
    key_hash    BLOB    NOT NULL PRIMARY KEY, -- SHA-256 of dedup.Key.Encode()
    scope       TEXT    NOT NULL,
    event_id    BLOB    NOT NULL,
    state       INTEGER NOT NULL,             -- 1 in progress, 2 released, 3 due for the DLQ, 4 done, 5 dead-lettered
    token       BLOB    NOT NULL,             -- owner token of the last claim
    lease_until INTEGER NOT NULL,             -- Unix time in µs
    expires_at  INTEGER NOT NULL,             -- Unix time in µs; the record is forgotten from then on
    deliveries  INTEGER NOT NULL,
    fingerprint BLOB,
    failure     BLOB,
    replay_id   BLOB
)`,
			`CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + on + ` (expires_at)`,
		}, nil
	}
}

func buildQueries(d Dialect, table string) (*queries, error) {
	schema, err := schemaStatements(d, table)
	if err != nil {
		return nil, err
	}
	x := dialectSQL{d: d, table: quoteIdent(d, table)}
	q := &queries{schema: schema}

	const cols = rowCols
	insert := `INSERT INTO {T} (key_hash, scope, event_id, state, token, lease_until, expires_at, deliveries, fingerprint, replay_id)
VALUES (?, ?, ?, 1, ?, {PLUS}, {PLUS}, 1, ?, ?)`
	switch d {
	case MySQL:
		q.insert = x.expand(insert)
		q.insertIsPlain = true
		q.lockRow = x.expand(`SELECT ` + cols + ` FROM {T} WHERE key_hash = ? FOR UPDATE`)
	case Postgres:
		q.insert = x.expand(insert + ` ON CONFLICT (key_hash) DO NOTHING`)
		q.lockRow = x.expand(`SELECT ` + cols + ` FROM {T} WHERE key_hash = ? FOR UPDATE`)
	case SQLite:
		q.insert = x.expand(insert + ` ON CONFLICT (key_hash) DO NOTHING`)
		// A write as the transaction's first statement takes SQLite's write
		// lock (waiting with busy_timeout) before the record is read, so the
		// read-decide-write below cannot race another connection.
		q.lockRow = x.expand(`UPDATE {T} SET state = state WHERE key_hash = ?`)
		q.lockIsUpdate = true
	}
	q.selectRow = x.expand(`SELECT ` + cols + ` FROM {T} WHERE key_hash = ?`)

	// Every value comes from a parameter or from the column itself, so
	// MySQL's left-to-right evaluation of SET cannot mix old and new values.
	q.acquire = x.expand(`UPDATE {T} SET state = 1, token = ?, lease_until = {PLUS}, expires_at = {MAX}(expires_at, {PLUS}),
deliveries = ?, fingerprint = ?, failure = NULL, replay_id = ? WHERE key_hash = ?`)
	const held = ` WHERE key_hash = ? AND token = ? AND expires_at > {NOW}`
	q.extend = x.expand(`UPDATE {T} SET lease_until = {PLUS}, expires_at = {MAX}(expires_at, {PLUS})` + held + ` AND state = 1`)
	q.finish = x.expand(`UPDATE {T} SET state = ?, failure = NULL, expires_at = {PLUS}` + held + ` AND state IN (1, ?)`)
	q.release = x.expand(`UPDATE {T} SET deliveries = {MAX}(deliveries - ?, 0), state = 2` + held + ` AND state = 1`)
	q.dueForDLQ = x.expand(`UPDATE {T} SET state = 3, failure = ?` + held + ` AND state IN (1, 3)`)
	q.heldState = x.expand(`SELECT state FROM {T}` + held)
	// The inbox takes the record with its transaction's first statement and
	// keeps it until the commit (see inboxGate). On the servers a shared row
	// lock is enough: every change of the record needs an exclusive one, and
	// a twin's INSERT and plain read do not wait for it. PostgreSQL's returns
	// the transaction's ID, which the completion matches, so a completion
	// run outside that transaction changes nothing; MySQL checks its
	// transaction is open before the completion (Store.inboxOpen). SQLite
	// locks the whole database for any write anyway and marks the record.
	const done = `UPDATE {T} SET state = 4, failure = NULL, expires_at = {PLUS} WHERE key_hash = ? AND token = ? AND state = `
	switch d {
	case Postgres:
		q.inboxHold = x.expand(`SELECT txid_current() FROM {T}` + held + ` AND state = 1 FOR SHARE`)
		q.inbox = x.expand(done + `1 AND txid_current() = ?`)
	case MySQL:
		q.inboxHold = x.expand(`SELECT 1 FROM {T}` + held + ` AND state = 1 LOCK IN SHARE MODE`)
		q.inbox = x.expand(done + `1`)
	case SQLite:
		q.inboxHold = x.expand(`UPDATE {T} SET state = ` + strconv.Itoa(stateInInbox) + held + ` AND state = 1`)
		q.inboxHoldIsUpdate = true
		q.inbox = x.expand(done + strconv.Itoa(stateInInbox))
	}
	// No expiry condition in the completion: the record was locked since
	// inboxHold, so nothing could take it over, however long fn took.

	switch d {
	case Postgres:
		// The outer condition is checked again on the locked row, so a record
		// a claim has just renewed is never deleted.
		q.cleanup = x.expand(`DELETE FROM {T} WHERE key_hash IN (
    SELECT key_hash FROM {T} WHERE expires_at <= {NOW} ORDER BY expires_at LIMIT ? FOR UPDATE SKIP LOCKED
) AND expires_at <= {NOW}`)
	case MySQL:
		q.cleanup = x.expand(`DELETE FROM {T} WHERE expires_at <= {NOW} ORDER BY expires_at LIMIT ?`)
	case SQLite:
		q.cleanup = x.expand(`DELETE FROM {T} WHERE rowid IN (
    SELECT rowid FROM {T} WHERE expires_at <= {NOW} ORDER BY expires_at LIMIT ?
) AND expires_at <= {NOW}`)
	}
	return q, nil
}

// durArg converts a duration to the µs parameter {PLUS} expects.
func durArg(d Dialect, v time.Duration) any {
	us := v.Microseconds()
	if d == Postgres {
		return float64(us)
	}
	return us
}
