// Package deduptest is the conformance suite for [dedup.Store]
// implementations, in the spirit of Watermill's pubsub/tests.TestPubSub: one
// call runs every case against a store.
//
//	func TestConformance(t *testing.T) {
//		deduptest.Run(t, func(t *testing.T) dedup.Store {
//			return mystore.New(...)
//		}, deduptest.Features{
//			Parallel: true,
//			Reopen: func(t *testing.T, st dedup.Store) dedup.Store {
//				return mystore.New(...) // a new client on the same backend
//			},
//		})
//	}
//
// The cases prove the lifecycle documented in package dedup: exactly one of
// many concurrent claims wins, a lease that runs out can be taken over and the
// old token is then fenced off, completion is idempotent for its owner,
// retention expiry forgets a record, releases count or not as asked, the
// delivery counter survives lease expiry, due-for-DLQ notes and replays work
// (every acquiring claim keeps its replay ID, so a replay is admitted once),
// a retried claim by the owner stores its fingerprint like any acquiring
// claim, cancelled contexts change nothing, scopes are isolated, and large and
// binary keys are stored exactly. With [Features.Reopen], a second instance
// opened on the same backend sees the counters, outcomes and held claims the
// first left.
//
// Cases sleep to let leases and retentions run out; with a store whose clock
// is coarse, set [Features.Granularity] so the waits are long enough.
package deduptest
