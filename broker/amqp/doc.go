// Package amqp builds Watermill publishers and subscribers for RabbitMQ
// (watermill-amqp v3 over amqp091-go) with defaults that suit idempo's
// effectively-once processing.
//
// # Publishing and subscribing
//
// [NewPublisher] and [NewSubscriber] take a [Config]; [ParseURL] checks an
// amqp://user:pass@host:port/vhost URL and returns one:
//
//	cfg, err := amqp.ParseURL("amqp://guest:guest@localhost:5672/")
//	pub, err := amqp.NewPublisher(cfg, logger)
//	sub, err := amqp.NewSubscriber(cfg, logger)
//
// A Watermill topic is a queue: Publish sends to the queue named after the
// topic through the default exchange, Subscribe consumes from it, and
// subscribers of one queue compete for its messages.
//
// The defaults, and why each is what it is, are listed on [Config] and in
// docs/backends.md. In short: durable queues declared before the first
// publish, persistent messages, publisher confirms with a timeout, manual
// acks, a prefetch window, pooled publisher channels, and a delay before a
// nacked delivery is requeued.
//
// # Message mapping
//
// Conversion never fails. The Watermill UUID travels in the
// _watermill_message_uuid header, as with watermill-amqp; RabbitMQ's
// redelivered flag is the metadata field _watermill_amqp_redelivered ("true" when set). Headers become metadata as text, tables such as
// the x-death header of a dead-letter exchange as JSON; the message-id
// property is in [MessageIDKey], extracted by [MessageID]. CloudEvents'
// cloudEvents:id and cloudEvents_id headers are extracted by
// [github.com/idempo/idempo/dedup.CloudEventsID].
//
// # Concurrency
//
// watermill-amqp hands out one delivery per consumer at a time and takes the
// next only after an ack or nack. Config.Consumers starts several consumers
// under one Subscribe, so one router handler processes that many messages at
// once; with one consumer the queue's order is kept. Publisher and Subscriber
// are safe for concurrent use.
package amqp
