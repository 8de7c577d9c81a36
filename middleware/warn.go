package middleware

import "github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

// warnVolatileDLQ logs a warning when the DLQ publisher is Watermill's
// in-process GoChannel. GoChannel hands a message only to the subscribers
// listening when it is published and keeps nothing on disk: a dead letter
// that no subscriber of the DLQ topic is waiting for is dropped, although the
// stack counts it as dead-lettered and acks the original. Fine for tests and
// demos that read the DLQ topic from the start; not a place to keep poison
// messages.
func warnVolatileDLQ(cfg Config) {
	if _, ok := cfg.DLQ.Publisher.(*gochannel.GoChannel); !ok {
		return
	}
	cfg.Logger.Warn("idempo: the DLQ publisher is an in-process GoChannel, which keeps nothing and drops messages " +
		"that no subscriber is waiting for: a dead letter is lost unless something subscribed to its DLQ topic " +
		"before it was published; use a durable broker's publisher (Kafka, RabbitMQ) to keep dead letters")
}
