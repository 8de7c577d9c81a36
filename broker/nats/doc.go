// Package nats builds Watermill publishers and subscribers for NATS
// JetStream with defaults that suit idempo's effectively-once processing.
//
// # Publishing and subscribing
//
// [NewPublisher] and [NewSubscriber] take a [Config]; [ParseURL] checks a
// nats://host:4222 URL (nats://user:pass@host, nats://token@host and tls://
// too) and returns one:
//
//	cfg, err := nats.ParseURL("nats://127.0.0.1:4222")
//	pub, err := nats.NewPublisher(cfg, logger)
//	sub, err := nats.NewSubscriber(cfg, logger)
//
// # Topics, subjects and streams
//
// A Watermill topic is a NATS subject ([Subject]): its '.' separate subject
// tokens, so "orders.dlq.handler" is a three-token subject. Stream names
// cannot contain '.', so the stream the preset creates for a topic is named
// by escaping it ([StreamName]: "orders.dlq.handler" →
// "orders_2Edlq_2Ehandler"); a stream that already captures the subject
// (one of your own, orders.>) is used as it is. Topics that are no literal
// subject (wildcards, white space, empty tokens, $ and _INBOX. prefixes,
// more than [MaxTopicLen] bytes) are refused with [ErrTopic].
//
// Streams use limits retention and file storage: an acked message stays
// readable (until MaxAge, when set), which the DLQ tools (dlq/natsdlq) rely
// on to list dead letters by sequence without consuming them. Subscribers
// with one Config.Durable share a durable pull consumer and so a topic's
// messages; each Durable receives every message.
//
// # Redelivery and the lease
//
// JetStream redelivers a message not acked within AckWait. The subscriber
// attaches a Touch to each message's context (internal/progress) that sends
// an in-progress ack; the idempo stack's lease keeper calls it after every
// lease extension, so a handler that runs (or retries) longer than AckWait
// is not handed to a second consumer. [NewSubscriber] checks that AckWait
// is at least the stack's Lease and that the server's MaxDeliver is above
// the stack's delivery cap (so idempo, not the server, decides when a
// message is dead). A nack is a negative ack with NackDelay. Consumers
// fetch one message at a time: nothing waits in a client buffer while its
// AckWait runs.
//
// # Why not watermill-nats' subscriber
//
// watermill-nats v2 (pkg/jetstream) keeps the JetStream message to itself,
// so nothing can send an in-progress ack for a running handler; after its
// own AckWaitTimeout it drops a message without acking or nacking it; its
// unmarshaler fails (and the subscriber then dereferences a nil message) on
// a header with several values; its publisher sets no Nats-Msg-Id and names
// streams after topics, which fails for any topic with a '.'. This package
// therefore drives nats.go's jetstream API itself and keeps watermill-nats'
// wire format (the Watermill UUID in [UUIDHeader], metadata as headers), so
// both interoperate.
//
// # Message mapping
//
// Conversion never fails. Metadata fields become headers; a field whose name
// is not a header name or whose value a header line cannot carry (line
// breaks, invalid UTF-8) travels base64-encoded and comes back as it was.
// A header with several values becomes a JSON array of strings. The
// Nats-Msg-Id of a producer that is not Watermill is in [MsgIDKey] and
// extracted by [MessageID]; JetStream's delivery count is in
// [NumDeliveredKey]. Several UUID or Nats-Msg-Id values, invalid UTF-8 or an
// undecodable encoded header are reported in "idempo_malformed", which
// makes the stack dead-letter the message.
//
// # Concurrency
//
// Config.Consumers workers per Subscribe each hand out one message at a
// time; with one, the stream's order is kept. Publisher and Subscriber are
// safe for concurrent use.
package nats
