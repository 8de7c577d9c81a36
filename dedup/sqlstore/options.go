package sqlstore

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"time"
)

// Dialect names the SQL dialect a [Store] speaks.
type Dialect string

const (
	// Postgres is PostgreSQL (12 or later), e.g. through the pgx stdlib
	// driver ("pgx") or lib/pq. Expiry is judged on clock_timestamp().
	Postgres Dialect = "postgres"
	// MySQL is MySQL 8 or MariaDB 10.5 or later through
	// github.com/go-sql-driver/mysql. Expiry is judged on UTC_TIMESTAMP(6).
	MySQL Dialect = "mysql"
	// SQLite is SQLite 3.42 or later, e.g. modernc.org/sqlite (driver
	// "sqlite", see [OpenSQLite]). Expiry is judged on unixepoch('subsec').
	SQLite Dialect = "sqlite"
)

// String returns the dialect's name.
func (d Dialect) String() string { return string(d) }

func (d Dialect) valid() bool { return d == Postgres || d == MySQL || d == SQLite }

// Defaults.
const (
	// DefaultTable is the default table name.
	DefaultTable = "idempo_dedup"
	// DefaultCleanupInterval is how often [Store.StartCleanup] runs by default.
	DefaultCleanupInterval = time.Minute
	// DefaultCleanupBatch is how many rows one cleanup statement removes at
	// most by default.
	DefaultCleanupBatch = 1000
	// MaxTokenLen is the longest owner token the store keeps, in bytes.
	// [dedup.NewToken] returns 32.
	MaxTokenLen = 255
)

// ErrUnknownDialect is returned by [New] when Options.Dialect is empty and the
// driver of the *sql.DB is not one the package recognises.
var ErrUnknownDialect = errors.New("sqlstore: cannot tell the SQL dialect from the driver (set Options.Dialect to sqlstore.Postgres, sqlstore.MySQL or sqlstore.SQLite)")

// Options configures a [Store]. A nil *Options means all defaults.
type Options struct {
	// Dialect is the database's SQL dialect. Defaults to the one detected
	// from db.Driver(): pgx (v4, v5) and lib/pq are Postgres,
	// go-sql-driver/mysql is MySQL (MariaDB included), modernc.org/sqlite,
	// mattn/go-sqlite3 and ncruces/go-sqlite3 are SQLite. For any other
	// driver New fails with [ErrUnknownDialect].
	Dialect Dialect

	// Table is the name of the dedup table, optionally qualified by a schema
	// (PostgreSQL, SQLite) or database (MySQL): "idempo_dedup" or
	// "ops.idempo_dedup". Each part must start with a letter or underscore,
	// hold only ASCII letters, digits and underscores, and be at most 48
	// bytes long (the expiry index is named after it). Names are quoted in
	// every statement, so they are case-sensitive. Defaults to
	// [DefaultTable].
	Table string

	// Logger receives cleanup reports (Info when rows were removed, Warn on
	// failures) and retried deadlocks (Debug). Defaults to slog.Default().
	Logger *slog.Logger

	// CleanupInterval is how often the goroutine started by
	// [Store.StartCleanup] removes expired records. Defaults to
	// [DefaultCleanupInterval].
	CleanupInterval time.Duration

	// CleanupBatch bounds the rows one cleanup statement deletes, so a
	// cleanup never holds many locks at once. Defaults to
	// [DefaultCleanupBatch].
	CleanupBatch int

	// InboxTxOptions are the options of the business transaction
	// [Store.CompleteInTx] begins (isolation level, read-only must stay
	// false). READ COMMITTED, REPEATABLE READ and SERIALIZABLE are supported
	// on PostgreSQL and MySQL/MariaDB (with innodb_snapshot_isolation on or
	// off). Defaults to nil: READ COMMITTED on PostgreSQL and MySQL/MariaDB,
	// asked for explicitly, whatever the server's or session's default;
	// SQLite's only level (SERIALIZABLE).
	InboxTxOptions *sql.TxOptions

	// DisableSharing sends every call in round trips of its own. By
	// default the claims of concurrent callers (and their completions by
	// [Store.Complete]) share round trips: those that arrive while a batch
	// is on the wire go out together, in key-hash order, as one multi-row
	// statement once it returns, up to 64 rows. Each row is still fenced by
	// its caller's token and answered with its own result, a row that fails
	// fails alone (its caller retries it on its own), and a caller alone is
	// sent at once: no timer holds a call back. The inbox's completion
	// ([Store.CompleteInTx]) always stays in its business transaction.
	DisableSharing bool
}

var identPart = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// ValidateTable reports whether name can be used as Options.Table.
func ValidateTable(name string) error {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return fmt.Errorf("sqlstore: invalid table name %q: at most one dot (schema.table) is allowed", name)
	}
	for _, p := range parts {
		if !identPart.MatchString(p) {
			return fmt.Errorf("sqlstore: invalid table name %q: each part must match %s (letters, digits, underscores; at most 48 bytes; no quoting or spaces)", name, identPart)
		}
	}
	return nil
}

func (o *Options) withDefaults(db *sql.DB) (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.Dialect == "" {
		d, err := DetectDialect(db)
		if err != nil {
			return c, err
		}
		c.Dialect = d
	}
	if !c.Dialect.valid() {
		return c, fmt.Errorf("sqlstore: Options.Dialect %q is not one of %q, %q, %q", c.Dialect, Postgres, MySQL, SQLite)
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if err := ValidateTable(c.Table); err != nil {
		return c, fmt.Errorf("%w (Options.Table)", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.CleanupInterval == 0:
		c.CleanupInterval = DefaultCleanupInterval
	case c.CleanupInterval < 0:
		return c, fmt.Errorf("sqlstore: Options.CleanupInterval cannot be negative, got %v", c.CleanupInterval)
	}
	switch {
	case c.CleanupBatch == 0:
		c.CleanupBatch = DefaultCleanupBatch
	case c.CleanupBatch < 0:
		return c, fmt.Errorf("sqlstore: Options.CleanupBatch cannot be negative, got %d", c.CleanupBatch)
	}
	if c.InboxTxOptions != nil && c.InboxTxOptions.ReadOnly {
		return c, errors.New("sqlstore: Options.InboxTxOptions.ReadOnly must be false (the inbox writes the completion in that transaction)")
	}
	return c, nil
}

// driverDialects maps the package path of a database/sql driver type to its dialect.
var driverDialects = map[string]Dialect{
	"github.com/jackc/pgx/v5/stdlib":       Postgres,
	"github.com/jackc/pgx/v4/stdlib":       Postgres,
	"github.com/lib/pq":                    Postgres,
	"github.com/go-sql-driver/mysql":       MySQL,
	"modernc.org/sqlite":                   SQLite,
	"github.com/mattn/go-sqlite3":          SQLite,
	"github.com/ncruces/go-sqlite3/driver": SQLite,
}

// DetectDialect tells db's dialect from its driver's package (pgx, lib/pq,
// go-sql-driver/mysql, modernc.org/sqlite, mattn/go-sqlite3,
// ncruces/go-sqlite3); an unknown driver gives an error matching
// [ErrUnknownDialect] that names the driver type. It is what every
// SQL-backed part of idempo uses when its options name no dialect.
func DetectDialect(db *sql.DB) (Dialect, error) {
	t := reflect.TypeOf(db.Driver())
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if d, ok := driverDialects[t.PkgPath()]; ok {
		return d, nil
	}
	return "", fmt.Errorf("%w: driver type %s.%s", ErrUnknownDialect, t.PkgPath(), t.Name())
}
