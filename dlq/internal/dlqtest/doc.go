// Package dlqtest is a test helper for the DLQ backends (amqpdlq, kafkadlq):
// the consumer under test, the waits and listings their tests share, and the
// replay scenario both run against their broker.
//
// A backend's tests build a [Backend] from their broker's publishers,
// subscriber and [dlqops.Source], then drive a [World]:
//
//	w := dlqtest.NewWorld(t, topic, dlqtest.Backend{...})
//	w.ReplayProcessesOnce(replayPublisher, nil)
//
// It is not part of the public API.
package dlqtest
