package redisstore

import "sync/atomic"

// SharingStats counts the round trips that carried the store's scripts
// since it was created, and the script calls they carried: CallsPerRoundTrip
// gives the mean pipeline size, which shows how much concurrent callers
// share round trips (see Options.DisableSharing). A call sent again on its
// own after a NOSCRIPT reply, and the EVAL that loads a script a server has
// not cached, are not counted again.
type SharingStats struct {
	// RoundTrips is the number of pipelines sent, a call sent on its own
	// counting as a pipeline of one.
	RoundTrips int64
	// Calls is the number of script calls they carried.
	Calls int64
}

// CallsPerRoundTrip is Calls / RoundTrips: 1 without sharing, more when
// concurrent calls share pipelines; 0 before the first call.
func (s SharingStats) CallsPerRoundTrip() float64 {
	if s.RoundTrips == 0 {
		return 0
	}
	return float64(s.Calls) / float64(s.RoundTrips)
}

// SharingStats returns the counts of the round trips the store's calls
// have made so far. It is safe to call at any time, from any goroutine; the
// counts are read one by one, so a snapshot taken while calls run may be
// off by the pipeline under way.
func (s *Store) SharingStats() SharingStats {
	return SharingStats{RoundTrips: s.trips.trips.Load(), Calls: s.trips.calls.Load()}
}

// sharingCounters are the counts behind SharingStats.
type sharingCounters struct {
	trips, calls atomic.Int64
}

func (c *sharingCounters) add(calls int) {
	c.trips.Add(1)
	c.calls.Add(int64(calls))
}
