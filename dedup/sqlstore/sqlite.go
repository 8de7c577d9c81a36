package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLiteBusyTimeout is how long a connection opened by [OpenSQLite] waits
// for another process's write lock before it fails with SQLITE_BUSY.
const SQLiteBusyTimeout = 5 * time.Second

// OpenSQLite opens (creating it if needed) the SQLite database file at path
// with modernc.org/sqlite (pure Go, no cgo), set up for one process with
// many goroutines:
//
//   - journal_mode=WAL, so readers of other processes never block the writer;
//   - busy_timeout of [SQLiteBusyTimeout], so a writer of another process is
//     waited for instead of failing at once;
//   - synchronous=NORMAL: a committed transaction survives a crash of the
//     process; after a power loss or OS crash the last transactions may be
//     lost, but never half of one (the inbox stays exactly-once; a lost
//     commit of an acked message is a lost effect). Open the database
//     yourself with synchronous(FULL) if that matters;
//   - transactions begin IMMEDIATE (they take the write lock at once);
//   - one open connection: SQLite has one writer at a time, and queuing in
//     the pool beats retrying on SQLITE_BUSY. Goroutines therefore wait for
//     each other's statements and transactions, so a [Store.CompleteInTx]
//     callback must use its transaction, never the *sql.DB.
//
// path must not contain '?'. The caller closes the returned *sql.DB.
func OpenSQLite(path string) (*sql.DB, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlstore: invalid SQLite path %q (empty or containing '?')", path)
	}
	dsn := path + "?_pragma=" + fmt.Sprintf("busy_timeout(%d)", SQLiteBusyTimeout.Milliseconds()) +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open SQLite %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlstore: open SQLite %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") && path != ":memory:" {
		_ = db.Close()
		return nil, fmt.Errorf("sqlstore: open SQLite %s: journal_mode is %q, not WAL", path, mode)
	}
	return db, nil
}
