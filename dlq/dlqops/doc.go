// Package dlqops is what operators (and the idempo CLI) do with
// dead letters: list, show, replay and purge the entries of a DLQ, with
// typed results, dry runs that return real counts, and snapshots that make
// a replay or purge act on exactly the entries a dry run counted.
//
// The DLQ itself is never modified: a [Source] reads it without consuming
// (dlq/kafkadlq, dlq/amqpdlq), and what operators decided lives in a
// [resolution.Store], keyed by DLQ and entry ID, with who and when.
// Listing reads the store in one round trip and writes nothing.
//
// # Guarantees
//
// A replay publishes each entry with its original event ID and payload,
// marked as a replay so the consumer's dedup admits it once, and resolves
// the entry only after the publish returned: a replay killed in between
// loses nothing (the entry shows in progress until its lease runs out, then
// unresolved, and a second replay republishes it; the consumer's dedup keeps
// the effect once). Two operators replaying at once never both take an
// entry: [resolution.Store.Begin] gives it to one.
//
// # Snapshots
//
// A dry run ([ReplayOptions.DryRun], [PurgeOptions.DryRun]) returns what the
// real run would do, in [Result], and a token, [Result.Snapshot]: the
// selection, the destination and the end of the DLQ as read (the last
// offset of each partition). A replay or purge given that token
// ([ReplayOptions.Snapshot], [PurgeOptions.Snapshot]) acts on exactly those
// entries: entries dead-lettered since are left alone, and entries another
// operator resolved since count as skipped, so the counts add up to the dry
// run's.
//
// # Concurrency
//
// [Ops] is safe for concurrent use; [ReplayOptions.Progress] runs on the
// calling goroutine.
package dlqops
