// Package retry holds idempo's in-process retry policy: exponential backoff
// with jitter, bounded by attempts and elapsed time, and the classification of
// errors into retryable and permanent.
//
// # Classification
//
// By default ([IsPermanent]) every error is retryable except errors marked
// with [Permanent]: never retried, dead-lettered at once. A [Classifier] in
// [Policy.Classify] decides otherwise, e.g. making a validation error
// permanent without marking it.
//
// An error never means cancellation by itself, not even context.Canceled: a
// handler that returns it while the consumer is not stopping is retried,
// counted and capped like any other failure. Cancellation (shutdown,
// rebalance, revoked partition) is decided by the middleware from its own
// per-message context: the claim is released and the message nacked, never
// retried nor dead-lettered.
//
// Database serialization failures (SQLSTATE 40001), deadlocks (40P01, MySQL
// 1213) and lock wait timeouts (MySQL 1205) are retryable, as is every error
// not marked otherwise. A handler that knows an input can never succeed (bad
// schema, validation failure) returns retry.Permanent(err).
//
// # Schedules
//
// [Policy.NewSchedule] steps one delivery's waits; the middleware waits them
// out, ending a wait at once when the message's context is done. The backoff
// maths comes from github.com/cenkalti/backoff/v4, which stays out of this
// package's API.
package retry
