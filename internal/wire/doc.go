// Package wire converts between Watermill messages and the records of the
// brokers idempo presets: Kafka records (through sarama, as watermill-kafka
// does), AMQP 0-9-1 deliveries (as watermill-amqp does) and Redis stream entries
// (as watermill-redisstream writes them, plus an id field). The presets in
// broker/kafka and broker/amqp use it, and so do the dead-letter sources
// that read a DLQ's records directly, so that a copy read back looks exactly
// as it did to the handler. Neither direction ever fails: a record that
// cannot be converted faithfully is marked malformed in its metadata.
package wire
