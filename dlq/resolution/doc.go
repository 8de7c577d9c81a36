// Package resolution keeps what operators decided about dead letters: one
// record per DLQ entry, keyed by the DLQ and the entry ID, saying whether
// the entry is being resolved right now (and by whom, until when) or was
// resolved, how ([Replayed], [Parked], [Purged]), by whom and when: the
// audit trail of a DLQ.
//
// A [Store] is small on purpose:
//
//   - [Store.Begin] atomically takes an entry for one operator for a lease
//     and says whether the entry is now theirs, held by another operator
//     whose lease still runs, or already resolved (and how);
//   - [Store.Finish] records the outcome, fenced by the token Begin gave;
//   - [Store.Abort] gives an entry back unresolved (a failed republish);
//   - [Store.Resolutions] reads every record of one DLQ in one round trip
//     and writes nothing, so a listing beside a replay changes nothing.
//
// A hold whose lease ran out counts as unresolved: a replay killed after
// its republish leaves the entry to be replayed again (the consumer's dedup
// absorbs the repeat). Resolved records are kept until removed by hand.
//
// Implementations: dlq/resolution/memstore (one process, tests),
// dlq/resolution/redisstore and dlq/resolution/sqlstore (PostgreSQL,
// MySQL/MariaDB, SQLite). dlq/resolution/resolutiontest is the conformance
// suite every implementation passes.
package resolution
