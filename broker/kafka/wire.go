package kafka

// PartitionKeyMetadata is the metadata field whose value the publisher sends
// as the Kafka record key, so that messages with one key land on one
// partition (and keep their order). Without it, a message consumed from
// Kafka keeps its original key (the dead-letter copy's partition-key field);
// with neither, the record has no key and records spread over partitions at
// random.
const PartitionKeyMetadata = "partition_key" // the same as the converter's (tested)
