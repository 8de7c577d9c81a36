// Package middleware is idempo's handler middleware stack for the Watermill
// router: dedup by event ID, in-process retries with backoff and jitter,
// dead-lettering of poison messages, and ack only after success — composed in
// the one correct order by [New].
//
// # Usage
//
//	stack, err := middleware.New(middleware.Config{
//		Store: memstore.New(nil), // or redisstore / sqlstore
//		DLQ:   dlq.Config{Publisher: publisher},
//	})
//	if err != nil { ... }
//	defer stack.Close()
//	router.AddConsumerHandler("charge-card", "orders", subscriber, func(msg *message.Message) error {
//		return chargeCard(msg) // your handler
//	}).AddMiddleware(stack.Middleware)
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
// once the DLQ publish succeeded. Cancellation — the message's own context
// done, or the stack closed — releases the claim and nacks; a handler's own
// context.Canceled is an ordinary failure. docs/semantics.md has the full
// table.
//
// # Reading the code
//
// [Stack] handles a message in the phases of the contract, one file each:
// identify.go (the event ID and scope), claim.go (the local gate and the
// store's claim), attempts.go (the handler's attempts and what a failure
// leads to), outputs.go (the handler's returned messages) and settle.go
// (completion, dead-lettering, release, and finish, where every delivery
// ends with one event for [Stack.Stats] and the [Observer]). lease.go holds a
// claim's lease and its states; keeper.go the one goroutine per stack that
// extends every lease and cuts off those it cannot, at least [MinLease] long.
//
// # Nacks
//
// Every nack waits Config.NackDelay first unless the message's context is
// done. The wrapped handler returns an error (which the router turns into a nack)
// in exactly these cases: [ErrInProgressElsewhere], [ErrStore],
// [ErrDeadLetter], [ErrRedelivery], [ErrCancelled], [ErrOutputPublish] and
// [github.com/idempo/idempo/dedup.ErrLeaseLost]. Every other path acks.
package middleware
