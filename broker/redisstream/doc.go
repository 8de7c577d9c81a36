// Package redisstream builds Watermill publishers and subscribers for Redis
// Streams (go-redis v9) with defaults that suit idempo's effectively-once
// processing.
//
// # Publishing and subscribing
//
// [NewPublisher] and [NewSubscriber] take a [Config]; [ParseURL] checks a
// redis-stream://[user:pass@]host:6379/db URL (rediss-stream:// for TLS) and
// returns one:
//
//	cfg, err := redisstream.ParseURL("redis-stream://localhost:6379/0")
//	cfg.Lease = stackLease // the idempo stack's Lease, when not the default 30s
//	pub, err := redisstream.NewPublisher(cfg, logger)
//	sub, err := redisstream.NewSubscriber(cfg, logger)
//
// A Watermill topic is a stream key. Publish appends with XADD (through
// watermill-redisstream's publisher); Subscribe reads through a consumer
// group (Config.ConsumerGroup, created at the stream's start): the
// subscribers of one group compete for its entries, each group gets them
// all.
//
// # Redelivery and the lease
//
// An entry read by a consumer stays in the group's pending list until it
// is acknowledged. The subscriber acknowledges (XACK) only after an ack; a
// nack leaves the entry pending and claims it back after NackDelay (its
// delivery count grows); a crash leaves it pending, and another consumer
// claims it (XAUTOCLAIM) once it has been idle for ClaimIdle, which must be
// longer than idempo's Lease plus NackDelay ([NewSubscriber] refuses
// otherwise). While a handler runs, the Touch the subscriber attaches to
// each message's context (called by the stack's lease keeper after every
// lease extension) resets the entry's idle time with XCLAIM … JUSTID to the
// same consumer, so a live handler's entry is never claimed.
//
// The subscriber is this package's own, on go-redis, not
// watermill-redisstream's: that one hands a nacked message out again
// in-process at once and forever without its delivery count growing,
// claims entries after a fixed idle time unrelated to any lease, cannot be
// told a handler still runs, and fails on entries without its UUID field.
//
// # Trimming
//
// Nothing is trimmed by default. Config.MaxLen caps a stream by length
// (XADD MAXLEN ~), which drops unacknowledged entries too.
// [Subscriber.TrimAcknowledged] deletes only entries every group has
// acknowledged.
//
// # Message mapping
//
// Conversion never fails. Entries carry watermill-redisstream's fields
// (_watermill_message_uuid, payload, and metadata as msgpack) plus an id
// field: the [MessageIDKey] metadata, or the UUID. Reading, the id field of
// any producer (redis-cli XADD s '*' id 42 payload …) goes to
// [MessageIDKey], extracted by [MessageID]; other fields become metadata of
// their name; the entry ID is in [EntryIDKey] and the group's delivery
// count in [DeliveryCountKey]. An entry that cannot be read faithfully (a
// metadata field that is neither msgpack nor JSON) is marked in the
// idempo_malformed metadata, so the stack dead-letters it.
//
// # Concurrency
//
// Each Subscribe call runs Config.Consumers loops, each handing out one
// entry at a time; with one, the stream's order is kept. Publisher and
// Subscriber are safe for concurrent use.
package redisstream
