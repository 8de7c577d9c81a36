// Package resolutiontest is the conformance suite for [resolution.Store]
// implementations, as dedup/deduptest is for dedup stores: one call runs
// every case against a store.
//
//	func TestConformance(t *testing.T) {
//		resolutiontest.Run(t, func(t *testing.T) resolution.Store {
//			return mystore.New(...)
//		}, resolutiontest.Features{Parallel: true})
//	}
//
// The cases prove the contract of package resolution: exactly one of many
// concurrent begins wins and the others see who holds the entry; a hold
// whose lease ran out is taken over and the old token is fenced off; finish
// records the outcome, who and when, and is idempotent for its token; abort
// gives the entry back; keys are (DLQ, entry ID), so one DLQ's resolution
// leaves another DLQ's entry of the same ID alone; the batch read returns
// every live record of one DLQ and nothing else, and changes nothing;
// invalid input and cancelled contexts are refused without a trace. With
// [Features.Reopen], a second instance on the same backend sees the records
// and holds the first left.
//
// Cases sleep to let leases run out; with a store whose clock is coarse, set
// [Features.Granularity].
package resolutiontest
