// Package middleware is idempo's handler middleware stack for the Watermill
// router: dedup by event ID, in-process retries with backoff and jitter,
// dead-lettering of poison messages, and ack only after success — composed in
// the one correct order by [New].
//
// # Usage
//
//	stack, err := middleware.New(middleware.Config{
//		Store:        memstore.New(nil), // or redisstore / sqlstore
//		DLQ: dlq.Config{Publisher: publisher},
//	})
//	if err != nil { ... }
//	router.AddConsumerHandler("orders", "orders", subscriber, stack.Middleware(handle))
//
// # The processing contract
//
// For each message the stack extracts the event ID and claims the key
// (scope, ID) in the store with a lease. A done or dead-lettered event is
// acked without running the handler. An event in progress elsewhere is nacked
// (after NackDelay). An acquired event runs the handler on a copy of the
// message, retrying retryable errors in-process with exponential backoff and
// jitter while the lease is extended; outputs are published before completion
// is recorded; then the message is acked. Permanent errors, exhausted retries
// and deliveries past the cap go to the DLQ, and the message is acked only
// once the DLQ publish succeeded. Cancellation releases the claim and nacks.
// docs/semantics.md has the full table.
//
// # Nacks
//
// The wrapped handler returns an error (which the router turns into a nack)
// in exactly these cases: [ErrInProgressElsewhere], [ErrStore],
// [ErrDeadLetter], [ErrRedelivery], [ErrCancelled], [ErrOutputPublish] and
// [github.com/idempo/idempo/dedup.ErrLeaseLost]. Every other path acks.
package middleware
