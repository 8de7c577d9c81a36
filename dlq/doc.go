// Package dlq is what the middleware stack dead-letters through: a
// [Publisher] that publishes a dead-letter copy of a poison message on any
// Watermill publisher, and the copy's schema ([Failure], [Info], the Reason
// values).
//
// A dead-letter copy keeps the original payload and metadata unchanged and
// adds idempo_ headers (docs/dlq.md lists them): where the message came
// from, which handler failed, the event ID, why (one of the Reason values),
// the last error and its class, attempts and deliveries, the first and last
// failure times and, after a panic, the stack. Operators list, show, replay
// and purge dead letters with package dlq/dlqops, which parses copies into
// typed entries.
package dlq
