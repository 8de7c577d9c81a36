// Package kafka builds Watermill publishers and subscribers for Kafka
// (watermill-kafka v3 over sarama) with defaults that suit idempo's
// effectively-once processing, and runs an embedded Kafka-protocol cluster
// for development and tests.
//
// # Publishing and subscribing
//
// [NewPublisher] and [NewSubscriber] take a [Config]; [ParseURL] turns
// kafka://host:port[,host:port] into one:
//
//	cfg, err := kafka.ParseURL("kafka://localhost:9092")
//	cfg.ConsumerGroup = "billing"
//	sub, err := kafka.NewSubscriber(cfg, logger)
//
// The defaults, and why each is what it is, are listed on [Config] and in
// docs/backends.md. In short: consumer groups with offsets marked only after
// an ack and committed in the background and on clean close; a group with no
// committed offset starts at the oldest message; an idempotent producer that
// waits for all in-sync replicas; a pause between redeliveries of a nacked
// message.
//
// # Message mapping
//
// Conversion never fails in either direction. The Watermill UUID travels in
// the _watermill_message_uuid header, as with watermill-kafka. A record's headers become
// metadata; its partition, offset and key are recorded under
// "idempo_original_partition",
// "idempo_original_offset" and
// "idempo_original_key", so a dead-letter copy
// keeps them. On publish, the metadata field [PartitionKeyMetadata] becomes
// the record key. Records from producers that are not Watermill have no UUID:
// deduplicate them by a header, e.g. CloudEvents' ce_id with
// [github.com/idempo/idempo/dedup.CloudEventsID].
//
// # Ordering and concurrency
//
// [Config.Ordering] chooses how a partition's messages are handed out.
// With [PartitionOrder] (the default) each partition hands out one message
// at a time and the next only after the previous is acked, so blocking
// in-process retries keep per-partition (and so per-key) order;
// dead-lettering a message lets the ones behind it pass. One subscriber
// processes as many messages at once as it has partitions.
//
// With [KeyOrder] a partition hands out up to [Config.MaxInFlight] messages
// at once, the messages of one record key one at a time in offset order, so
// a slow handler (an I/O call) no longer holds the whole partition. With
// [Unordered] there is no order at all. Both commit the partition's
// watermark, its lowest offset not yet acked: a crash redelivers from there,
// and the idempo middleware absorbs the messages already done.
//
// # Embedded cluster
//
// Package [github.com/idempo/idempo/broker/kafka/embedded] runs franz-go's
// kfake in-process on loopback ports, with topics created on first use. It
// speaks enough of the protocol for producers, consumer groups and tools
// such as kcat, but it is not Kafka: no replication, and no durability
// unless its Config.DataDir is set.
package kafka
