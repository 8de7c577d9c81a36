// Package natsdlq inspects, replays and purges idempo dead letters on NATS
// JetStream, through [dlqops.Ops].
//
// # Why reading consumes nothing
//
// The streams of the NATS preset (broker/nats) use limits retention: a
// message stays in its stream after consumers ack it. A DLQ topic is such a
// stream ([nats.StreamName] of the topic), so [Source] reads it by stream
// sequence (a direct get of each message, no consumer at all): listing
// changes nothing, however often it runs, and no durable consumer of the
// DLQ is disturbed. The entry's Position is the stream sequence; the entry
// ID is the idempo_dlq_entry_id the DLQ copy carries.
//
// [NewDLQPublisher] returns the publisher for dead letters (give it to
// middleware.Config.DLQ.Publisher): the preset's publisher with MaxAge
// cleared, so dead letters never age out. A dead-letter copy's Nats-Msg-Id
// is its entry ID, so a copy published twice is stored once.
//
// # Replaying
//
// [NewReplayPublisher] republishes to the consumers' topics (and parks
// entries past the replay cap in a parking topic, a stream like the DLQ).
// A replayed copy's Nats-Msg-Id carries the replay's ID, so JetStream's
// duplicate window does not drop a replay of a message published moments
// before.
package natsdlq
