// Package sqlstore is a [resolution.Store] on a SQL database: PostgreSQL,
// MySQL/MariaDB or SQLite, with the dialects of dedup/sqlstore.
//
// One table (default idempo_dlq_resolutions, created by [Store.Migrate])
// holds one row per entry, keyed by (dlq, entry_id): state (1 held, 2
// resolved), token, by_whom, at_us (when the hold began or the entry was
// resolved), lease_until_us and outcome. Times are microseconds since the
// Unix epoch by the database's clock. Begin is an insert-if-absent, else a
// takeover of a run-out hold, else a read, each one statement; Finish and
// Abort are one statement fenced by the token; [Store.Resolutions] is one
// SELECT over the primary key's prefix: one round trip, no write. Rows are
// kept until deleted by hand.
//
// On MySQL/MariaDB the key columns are VARBINARY, so entry IDs compare
// byte for byte (no case folding, no trailing-space padding).
package sqlstore
