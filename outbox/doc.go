// Package outbox is a transactional outbox on a SQL database through
// database/sql: PostgreSQL, MySQL/MariaDB and SQLite. Messages are written in
// the caller's business transaction ([Outbox.Write], or the
// message.Publisher of [Outbox.Publisher]) and published afterwards by one
// or more [Relay]s to any Watermill publisher.
//
// # Writing
//
// Write stores the messages of one call with one multi-row INSERT, after
// taking a transaction lock per ordering key (PostgreSQL
// pg_advisory_xact_lock, a locked key row on MySQL/MariaDB, SQLite's write
// lock), so the rows of one key are numbered in their commit order. A
// rollback writes nothing. Each row keeps the message UUID (the consumer's
// deduplication key), its ordering key, payload, metadata and the writer's
// trace context (W3C traceparent).
//
// # Relaying
//
// Keys are hashed into [Options].Buckets buckets. Relays lease buckets in the
// table Table+"_leases" with fencing tokens, each taking a fair share; a
// relay publishes the unsent rows of its buckets in id order and then
// deletes them (or marks them sent, see [RelayConfig].Retention) with a
// statement that matches only while its lease token is the bucket's: a
// relay that lost its lease marks nothing. There is no cursor: a row with a
// lower id that commits late is found by the next pass.
//
// # Guarantees
//
// At least once, in key order: every committed row is published at least
// once; a crash (or a lost lease) between the publish and the mark publishes
// it again with the same UUID, which the consumer's deduplication absorbs.
// The rows of one key are published in commit order, except that a row
// moved to the dead table (Table+"_dead") no longer holds back the later
// rows of its key. See docs/outbox.md.
package outbox
