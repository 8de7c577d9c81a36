// Package amqpdlq inspects, replays and purges idempo dead letters on
// RabbitMQ, through [dlqops.Ops].
//
// # Why the DLQ is a stream queue
//
// A classic (or quorum) queue can only be read by taking its messages: a
// consumer gets each message once and either acks it (gone) or requeues it
// (moved to the back, redelivered flag set, order lost). Listing a DLQ must
// change nothing, so idempo's RabbitMQ DLQs are durable stream queues
// (x-queue-type: stream, RabbitMQ 3.9 and later): an append-only log that any
// number of consumers read from any offset without removing anything.
// [NewDLQPublisher] returns the publisher that declares them; give it to
// middleware.Config.DLQ.Publisher. The consumers' own queues stay what they
// are.
//
// # Reading
//
// [Source] attaches a consumer with x-stream-offset "first", a QoS prefetch
// (streams require one) and manual acks (an ack on a stream only grants
// credit), and reads until the end as of the call: the message count the
// queue reports when the read begins, then until the stream is quiet for
// [Options.Idle]. The entry position is the stream offset, from the
// x-stream-offset delivery header. Messages are converted exactly as the
// idempo RabbitMQ subscriber converts them.
//
// # Replaying
//
// [ReplayPublisher] republishes to the consumers' queues and parks entries
// past the replay cap in a stream queue ([dlqops.ParkingTopic]).
package amqpdlq
