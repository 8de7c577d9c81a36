// Package metrics exports what the idempo middleware stack does as
// Prometheus metrics. [Metrics] is a [middleware.Observer]: create it with
// [New] on your registry and pass it as [middleware.Config.Observer].
//
// # Usage
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, nil)
//	if err != nil { ... }
//	stack, err := middleware.New(middleware.Config{
//		Store:        store,
//		DLQ: dlq.Config{Publisher: publisher},
//		Observer:     m,
//	})
//
// Expose reg with promhttp.HandlerFor on your own HTTP server, or with
// [Serve] if the process has none.
//
// # Series
//
// Every name starts with idempo_. Labels are only handler (the Watermill
// router's handler name; "" outside a router), topic (the subscribed topic)
// and the fixed enums outcome and operation, so cardinality is bounded by
// the handlers and topics of the process. Options.ConstLabels adds labels to
// every series.
//
//	idempo_messages_total{handler,topic,outcome}                 counter    one per delivery, on KindOutcome
//	idempo_retries_total{handler,topic}                          counter    KindRetry
//	idempo_handler_duration_seconds{handler,topic}               histogram  KindAttempt, failed attempts included
//	idempo_store_operation_duration_seconds{handler,operation}   histogram  KindStoreOp
//	idempo_store_errors_total{handler,operation}                 counter    KindStoreOp with an error other than dedup.ErrLeaseLost
//	idempo_lease_extensions_total{handler,topic}                 counter    KindLeaseExtended
//	idempo_lease_lost_total{handler,topic}                       counter    KindLeaseLost
//	idempo_complete_failed_total{handler,topic}                  counter    KindCompleteFailed
//	idempo_dlq_publish_failed_total{handler,topic}               counter    KindDLQPublishFailed
//	idempo_ignored_acks_total{handler,topic}                     counter    KindIgnoredAck
//
// outcome is one of [middleware.Outcomes] (processed, duplicate,
// in_progress_nacked, dead_lettered, failed); operation one of the
// [middleware.StoreOps] (claim, extend, complete, release,
// mark_due_for_dlq, mark_dead_lettered, complete_in_tx). The totals equal
// the stack's own [middleware.Stack.Stats] when one Metrics observes one
// stack.
//
// # Series from the start
//
// [Metrics.Register] creates every series of a (handler, topic) pair with
// value 0, so rate() and alerts work before the first failure. Observe
// does the same on the first event of a new pair, so calling Register is
// only needed to have the series before the first message.
//
// # Registration
//
// [New] registers on the registry it is given and never on the global one
// unless that is what it is given. Registering twice on one registry fails
// with a wrapped [prometheus.AlreadyRegisteredError].
//
// docs/observability.md has the full table, PromQL examples and the stack's
// logging.
//
// # Outbox
//
// [NewOutboxCollector] exports an outbox's pending and dead rows and oldest
// pending age per topic (read with outbox.Outbox.Status on each scrape) and
// the counters of the relays of the process.
package metrics
