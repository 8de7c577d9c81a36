// Package progress carries a broker's "still being handled" signal from a
// subscriber to the idempo stack. A preset whose broker redelivers a message
// that is not acked within a deadline (NATS JetStream's AckWait, a Redis
// Streams pending entry's idle time) attaches a touch function to each
// message's context with [Attach]; the stack's lease keeper calls it after
// every successful lease extension (about every Lease/3 while a claim is
// held), so the broker's clock restarts whenever idempo's lease does and a
// message whose handler still runs is not handed to another consumer.
package progress
