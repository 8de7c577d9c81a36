// Package sqlstore is a [dedup.Store] on a SQL database through
// database/sql: PostgreSQL, MySQL/MariaDB and SQLite. It also implements
// [dedup.TxCompleter], the transactional inbox: business writes and the
// completion record commit in one transaction.
//
// # Setting up
//
// Open the database with its driver (pgx's stdlib "pgx", go-sql-driver's
// "mysql", or [OpenSQLite] for an embedded SQLite file), build the store
// with [New] and create its table with [Store.Migrate], or have a DBA run
// the SQL [Schema] returns:
//
//	db, err := sqlstore.OpenSQLite("/var/lib/app/dedup.db")
//	store, err := sqlstore.New(db, &sqlstore.Options{Table: "idempo_dedup"})
//	err = store.Migrate(ctx)
//
// The dialect is detected from the driver unless [Options].Dialect names it.
//
// # Guarantees
//
// Used as a plain [dedup.Store], the store suppresses duplicates: an event
// completed once is never run again by the same scope while its record is
// kept. A crash (or a lost lease) between the handler's effect and
// [Store.Complete] can repeat that one effect.
//
// With the transactional inbox ([Store.CompleteInTx]), effects written
// through the transaction it hands the handler ([TxFromContext]) are applied
// exactly once, even when the process is killed at any point: the writes and
// the completion commit together, fenced by the owner token, and roll back
// together when the lease was lost to another owner. Effects outside that
// database (HTTP calls, other databases, published messages) keep the plain
// guarantee.
//
// # Records and clocks
//
// One row per [dedup.Key], keyed by [dedup.Key.Hash] (32 bytes), with the
// scope and raw event ID kept for inspection. Leases and retention are
// judged on the database's clock, never the caller's: clock_timestamp() on
// PostgreSQL (not now(), which stands still for a whole transaction),
// UTC_TIMESTAMP(6) on MySQL/MariaDB (not NOW(6), which follows the session
// time zone), unixepoch('subsec') on SQLite. A claim of a new key is one
// INSERT; a claim that takes a record over is one short transaction that
// locks the row (SELECT ... FOR UPDATE; on SQLite the write lock) and
// computes every new value from the locked old row, so MySQL's left-to-right
// evaluation of assignments plays no part. Every other method is one UPDATE
// fenced by the token. Deadlocks and serialisation failures are retried a
// few times.
//
// # Cleanup
//
// Expired records are ignored and reused by Claim; [Store.Cleanup] deletes
// them in bounded batches to reclaim space, and [Store.StartCleanup] runs it
// periodically in one goroutine until stopped.
//
// # Concurrency
//
// A [Store] is safe for concurrent use by many goroutines, and many
// processes may share one table. Concurrent callers share round trips by
// default: the claims (and [Store.Complete] calls) that arrive while one
// statement of their kind is on the wire go out together, when it returns,
// as one multi-row statement in key-hash order, each row fenced by its own
// token and answered on its own; a caller alone is sent at once. See
// [Options].DisableSharing. With [OpenSQLite] the pool holds one
// connection, so goroutines take turns; a [Store.CompleteInTx] callback must
// then use its transaction and never the *sql.DB.
package sqlstore
