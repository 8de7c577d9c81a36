// Package dedup defines the dedup store contract idempo's middleware stack is
// built on: keys scoped by consumer, event-ID extractors, the [Store] interface
// with its claim → complete/release lifecycle, and the errors stores return.
//
// # The record lifecycle
//
// A store keeps one record per [Key]. A record is created by the first
// [Store.Claim] and moves between these states:
//
//	           Claim                 Complete
//	(none) ─────────────▶ in progress ───────────▶ done (kept for the retention)
//	                        │   ▲  │
//	           Release      │   │  │ MarkDeadLettered
//	        ◀───────────────┘   │  └──────────────▶ dead-lettered (kept for the retention)
//	  released ─── Claim ───────┘
//	                        │ MarkDueForDLQ
//	                        └──────▶ due for the DLQ ── Claim ──▶ in progress (with the failure)
//
// A claim holds a lease: a duration judged on the store's own clock. While the
// lease lasts no other claim of the key is acquired; once it has run out without
// being extended, the next claim takes the record over and the old owner's token
// no longer completes, extends or releases anything ([ErrLeaseLost]). Every call
// that changes a claimed record is fenced by the owner [Token].
//
// A dead-lettered record is terminal for its retention, except for a replay
// from the DLQ: a claim carrying a replay ID other than the one the record
// stored acquires it again, with the counter restarted. Every acquiring claim that
// carries a replay ID stores it (see [ClaimRequest.ReplayID]), so copies of
// one replay message are admitted once.
//
// The delivery counter counts acquired claims across restarts and instances.
// It is kept with the record for the retention period, so a message that keeps
// crashing its consumer is capped by the middleware's delivery limit.
//
// # Writing a store
//
// Implement [Store] and run [github.com/idempo/idempo/dedup/deduptest.Run]
// against it: the suite proves the lifecycle above, including concurrent
// claims, lease expiry, stale tokens, retention, the delivery counter, replay
// IDs, cancellation and binary keys. A store that keeps its records outside
// the process also sets
// [github.com/idempo/idempo/dedup/deduptest.Features.Reopen], so the suite
// checks that a second instance opened on the same backend sees the first
// one's records. Stores that can record completion inside a business
// transaction also implement [TxCompleter].
package dedup
