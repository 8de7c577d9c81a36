// Package dlq routes poison messages to a dead-letter destination on any
// Watermill publisher, with failure metadata under documented keys, and
// defines the metadata schema that the inspect and replay tooling reads.
//
// A dead-letter copy keeps the original payload and metadata unchanged and
// adds the keys listed in this package (all prefixed "idempo_"): where the
// message came from, which handler failed, the event ID, why (one of the
// Reason values), the last error and its class, attempts and deliveries, the
// first and last failure times and, after a panic, the stack.
package dlq
