// Package kafkadlq inspects, replays and purges idempo dead letters on Kafka,
// through [dlqops.Ops]. It keeps the Kafka client libraries out of packages dlq and dlqops.
//
// # Reading without a consumer group
//
// [Source] reads a DLQ topic with direct partition assignment (franz-go),
// never through a consumer group: it commits no offset, joins no group and
// triggers no rebalance, so listing a DLQ any number of times changes
// nothing for anyone. Each read first asks the cluster for every
// partition's earliest offset and high watermark, then reads each partition
// from its earliest offset up to that watermark: records appended during the
// read are left for the next one.
//
// # Entries
//
// Each record becomes a Watermill message exactly as the idempo Kafka
// subscriber converts it (broker/kafka's Marshaler), and then a [dlqops.Entry]
// whose Position is "partition/offset". Entries are returned partition by
// partition, each partition oldest first.
//
// # Replaying
//
// Replays are published with the idempo Kafka publisher
// (broker/kafka.NewPublisher) to each entry's original topic; the
// resolution records live in a resolution store, see [dlqops.Ops].
package kafkadlq
