package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/sqlstore"
)

// Servers the tests run against; CI starts them. Override with these
// environment variables.
const (
	postgresDSNEnv = "IDEMPO_TEST_POSTGRES_DSN"
	mysqlDSNEnv    = "IDEMPO_TEST_MYSQL_DSN"

	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test?parseTime=true"
)

var quietLogger = slog.New(slog.DiscardHandler)

var dialects = []sqlstore.Dialect{sqlstore.Postgres, sqlstore.MySQL, sqlstore.SQLite}

func dsnFor(tb testing.TB, d sqlstore.Dialect) string {
	switch d {
	case sqlstore.Postgres:
		if v := os.Getenv(postgresDSNEnv); v != "" {
			return v
		}
		return defaultPostgresDSN
	case sqlstore.MySQL:
		if v := os.Getenv(mysqlDSNEnv); v != "" {
			return v
		}
		return defaultMySQLDSN
	default:
		return filepath.Join(tb.TempDir(), "dedup.db")
	}
}

// openDSN opens a database of dialect d; it is shared by the test helpers and
// the kill-test child process.
func openDSN(ctx context.Context, d sqlstore.Dialect, dsn string, maxConns int) (*sql.DB, error) {
	var db *sql.DB
	var err error
	switch d {
	case sqlstore.Postgres:
		db, err = sql.Open("pgx", dsn)
	case sqlstore.MySQL:
		db, err = sql.Open("mysql", dsn)
	default:
		return sqlstore.OpenSQLite(dsn)
	}
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// openDB opens a database for a test and closes it at the end. An
// unreachable server fails the test: CI starts the servers.
func openDB(tb testing.TB, d sqlstore.Dialect) (*sql.DB, string) {
	tb.Helper()
	dsn := dsnFor(tb, d)
	db, err := openDSN(context.Background(), d, dsn, 16)
	if err != nil {
		env := map[sqlstore.Dialect]string{sqlstore.Postgres: postgresDSNEnv, sqlstore.MySQL: mysqlDSNEnv}[d]
		tb.Fatalf("%s is unreachable at %q: %v\n(start the server, or point %s at one)", d, dsn, err, env)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// newStore creates a store on its own random table, migrated, dropped at the
// end of the test.
func newStore(tb testing.TB, d sqlstore.Dialect) (*sqlstore.Store, string) {
	tb.Helper()
	return newStoreWith(tb, d, nil)
}

// newStoreWith is newStore with options changed by opt (nil for none).
func newStoreWith(tb testing.TB, d sqlstore.Dialect, opt func(*sqlstore.Options)) (*sqlstore.Store, string) {
	tb.Helper()
	db, dsn := openDB(tb, d)
	o := &sqlstore.Options{Table: randomName("idempo_test_"), Logger: quietLogger}
	if opt != nil {
		opt(o)
	}
	st, err := sqlstore.New(db, o)
	require.NoError(tb, err)
	require.Equal(tb, d, st.Dialect(), "dialect detected from the driver")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(tb, st.Migrate(ctx))
	tb.Cleanup(func() {
		_ = st.Close()
		dropTable(db, d, st.Table())
	})
	return st, dsn
}

func quote(d sqlstore.Dialect, name string) string {
	if d == sqlstore.MySQL {
		return "`" + name + "`"
	}
	return `"` + name + `"`
}

func dropTable(db *sql.DB, d sqlstore.Dialect, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+quote(d, name))
}

// createEffects creates a business table without a unique constraint, so a
// doubled effect would show as two rows.
func createEffects(tb testing.TB, db *sql.DB, d sqlstore.Dialect) string {
	tb.Helper()
	name := randomName("effects_")
	_, err := db.ExecContext(context.Background(), fmt.Sprintf("CREATE TABLE %s (event_id VARCHAR(64) NOT NULL, worker INTEGER NOT NULL)", quote(d, name)))
	require.NoError(tb, err)
	tb.Cleanup(func() { dropTable(db, d, name) })
	return name
}

func insertEffect(d sqlstore.Dialect, table string) string {
	if d == sqlstore.Postgres {
		return "INSERT INTO " + quote(d, table) + " (event_id, worker) VALUES ($1, $2)"
	}
	return "INSERT INTO " + quote(d, table) + " (event_id, worker) VALUES (?, ?)"
}

// effectCounts returns how many rows each event has in the effects table.
func effectCounts(tb testing.TB, db *sql.DB, d sqlstore.Dialect, table string) map[string]int {
	tb.Helper()
	rows, err := db.QueryContext(context.Background(), "SELECT event_id, COUNT(*) FROM "+quote(d, table)+" GROUP BY event_id")
	require.NoError(tb, err)
	defer rows.Close()
	m := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		require.NoError(tb, rows.Scan(&id, &n))
		m[id] = n
	}
	require.NoError(tb, rows.Err())
	return m
}

// inboxEnv is one database set-up the inbox tests run in: a dialect, what
// its DSN adds (a session default), and the store's InboxTxOptions.
type inboxEnv struct {
	name    string
	dialect sqlstore.Dialect
	dsnAdd  string // appended to the DSN's query (PostgreSQL: a run-time parameter; MySQL: a session variable)
	txOpts  *sql.TxOptions
}

// inboxEnvs are the isolation levels the inbox supports: on PostgreSQL READ
// COMMITTED, REPEATABLE READ and SERIALIZABLE, each asked through
// InboxTxOptions and as the session default; on MariaDB the same with
// innodb_snapshot_isolation off and on; SQLite's only level.
func inboxEnvs() []inboxEnv {
	rr, ser := &sql.TxOptions{Isolation: sql.LevelRepeatableRead}, &sql.TxOptions{Isolation: sql.LevelSerializable}
	return []inboxEnv{
		{name: "postgres", dialect: sqlstore.Postgres},
		{name: "postgres/read-committed-option", dialect: sqlstore.Postgres, txOpts: &sql.TxOptions{Isolation: sql.LevelReadCommitted}},
		{name: "postgres/repeatable-read-option", dialect: sqlstore.Postgres, txOpts: rr},
		{name: "postgres/serializable-option", dialect: sqlstore.Postgres, txOpts: ser},
		{name: "postgres/repeatable-read-default", dialect: sqlstore.Postgres, dsnAdd: "default_transaction_isolation=repeatable%20read"},
		{name: "postgres/serializable-default", dialect: sqlstore.Postgres, dsnAdd: "default_transaction_isolation=serializable"},
		{name: "mysql", dialect: sqlstore.MySQL},
		{name: "mysql/repeatable-read-option", dialect: sqlstore.MySQL, txOpts: rr},
		{name: "mysql/snapshot-isolation", dialect: sqlstore.MySQL, dsnAdd: "innodb_snapshot_isolation=ON"},
		{name: "mysql/snapshot-isolation-repeatable-read-option", dialect: sqlstore.MySQL, dsnAdd: "innodb_snapshot_isolation=ON", txOpts: rr},
		{name: "mysql/snapshot-isolation-serializable-option", dialect: sqlstore.MySQL, dsnAdd: "innodb_snapshot_isolation=ON", txOpts: ser},
		{name: "mysql/snapshot-isolation-repeatable-read-default", dialect: sqlstore.MySQL, dsnAdd: "innodb_snapshot_isolation=ON&tx_isolation=%27REPEATABLE-READ%27"},
		{name: "sqlite", dialect: sqlstore.SQLite},
	}
}

// newInboxStore is newStore in env.
func newInboxStore(tb testing.TB, env inboxEnv) *sqlstore.Store {
	tb.Helper()
	dsn := dsnFor(tb, env.dialect)
	if env.dsnAdd != "" {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + env.dsnAdd
	}
	db, err := openDSN(context.Background(), env.dialect, dsn, 16)
	require.NoError(tb, err, "%s is unreachable (start the server, or point %s/%s at one)", env.dialect, postgresDSNEnv, mysqlDSNEnv)
	tb.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The session defaults the DSN asks for must be in force.
	switch {
	case strings.Contains(env.dsnAdd, "default_transaction_isolation="):
		var level string
		require.NoError(tb, db.QueryRowContext(ctx, "SHOW default_transaction_isolation").Scan(&level))
		require.NotEqual(tb, "read committed", level)
	case strings.Contains(env.dsnAdd, "innodb_snapshot_isolation=ON"):
		var on int
		require.NoError(tb, db.QueryRowContext(ctx, "SELECT @@SESSION.innodb_snapshot_isolation").Scan(&on), "innodb_snapshot_isolation needs MariaDB 10.11.8 or later")
		require.Equal(tb, 1, on)
	}
	st, err := sqlstore.New(db, &sqlstore.Options{Table: randomName("idempo_test_"), Logger: quietLogger, InboxTxOptions: env.txOpts})
	require.NoError(tb, err)
	require.NoError(tb, st.Migrate(ctx))
	tb.Cleanup(func() {
		_ = st.Close()
		dropTable(db, env.dialect, st.Table())
	})
	return st
}

// serializationFailure reports a serialisation failure or deadlock the
// database rolled a transaction back for (to be retried).
func serializationFailure(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "40001" || pg.Code == "40P01"
	}
	var my *mysql.MySQLError
	return errors.As(err, &my) && (my.Number == 1213 || my.Number == 1020)
}
