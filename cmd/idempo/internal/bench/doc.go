// Package bench measures what idempo's stack costs: the `idempo bench`
// command.
//
// # Variants
//
// One run pushes the same workload through three handlers on the broker and
// store it is given:
//
//   - bare: a Watermill router handler with no middleware;
//   - watermill: Watermill's own answer, PoisonQueue wrapping Retry wrapping
//     a Deduplicator keyed by message UUID (the order of watermill#645);
//   - idempo: [middleware.New] on the opened store, its DLQ on the same
//     broker.
//
// The variants run in alternation within one run: every round runs each
// variant once, on a fresh topic (and queue, and dedup scope) named from the
// run ID, the round and the variant, and the order rotates from round to
// round (bare, watermill, idempo; then watermill, idempo, bare; …) so that
// no variant always follows the same one. A warm-up round that is not
// recorded comes first. The heap is collected before every round.
//
// # What is measured
//
// Throughput is messages per second of consumption: from the first delivery
// to the last ack of the round. On GoChannel the publisher runs during the
// round, in this process, with at most a few hundred messages in flight; on
// Kafka and RabbitMQ every message is published before the router starts,
// so publishing is not timed.
//
// Latency is handler-to-ack: from the moment the outermost middleware gets
// the message until the whole chain returned nil, after which the router
// acks at once. It excludes the time a message waits in the broker.
//
// Allocations are runtime.MemStats Mallocs (and TotalAlloc) deltas over the
// round divided by its messages. They count everything the process
// allocates meanwhile: the router, the broker client and, on GoChannel, the
// publisher, not only the middleware.
//
// The cost of a variant is its time per message; [Report.RatioVsBare] and
// [Report.RatioVsWatermill] divide idempo's cost by the others'.
//
// # Correctness
//
// The workload is checked as it is measured: every message of a round must
// be acked and its effect (an increment of its own counter) must have
// happened exactly once, with no delivery nacked. A variant that breaks
// this fails the run with an error matching [ErrCheck]; it is never reported
// as a figure.
//
// # Memory
//
// With [Options.Memory], the run also reports what the store keeps per key:
// the heap per in-flight key of the in-memory store, MEMORY USAGE of a done
// record in Redis, and the table's size per row in PostgreSQL, MySQL and
// SQLite. See [MemoryResult].
//
// # Matrix
//
// [RunMatrix] runs every broker × store combination and renders one
// markdown table with the machine it ran on ([MatrixResult.Markdown]);
// combinations whose server cannot be reached are skipped with the reason.
package bench
