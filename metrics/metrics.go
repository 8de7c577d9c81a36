package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/middleware"
)

// Label names.
const (
	labelHandler   = "handler"
	labelTopic     = "topic"
	labelOutcome   = "outcome"
	labelOperation = "operation"
)

// operations are the store operations of [middleware.KindStoreOp] events, in
// the order of handlerStore's slices.
var operations = middleware.StoreOps

func opIndex(op string) int {
	for i, o := range operations {
		if o == op {
			return i
		}
	}
	return -1
}

func outcomeIndex(o middleware.Outcome) int {
	for i, x := range middleware.Outcomes {
		if x == o {
			return i
		}
	}
	return -1
}

// Metrics exports the events of a [middleware.Stack] as Prometheus metrics.
// Pass it as [middleware.Config.Observer]. One Metrics may observe any
// number of stacks and handlers.
//
// A Metrics is safe for concurrent use. Observe does not allocate once a
// (handler, topic) pair has been seen: the series of each pair are looked up
// in a copy-on-write map with one atomic load.
//
// Metrics is also a [prometheus.Collector]; [New] registers it.
type Metrics struct {
	messages         *prometheus.CounterVec
	retries          *prometheus.CounterVec
	handlerDuration  *prometheus.HistogramVec
	storeDuration    *prometheus.HistogramVec
	storeErrors      *prometheus.CounterVec
	leaseExtensions  *prometheus.CounterVec
	leaseLost        *prometheus.CounterVec
	completeFailed   *prometheus.CounterVec
	dlqPublishFailed *prometheus.CounterVec
	ignoredAcks      *prometheus.CounterVec

	collectors []prometheus.Collector

	mu  sync.Mutex             // serializes writers of idx
	idx atomic.Pointer[series] // read without locking; replaced whole
}

var (
	_ middleware.Observer  = (*Metrics)(nil)
	_ prometheus.Collector = (*Metrics)(nil)
)

// series is an immutable snapshot of the cached label children.
type series struct {
	pairs  map[pairKey]*pairSeries
	stores map[string]*handlerStore
}

type pairKey struct{ handler, topic string }

// pairSeries holds the children of one (handler, topic) pair.
type pairSeries struct {
	outcomes         []prometheus.Counter // indexed like middleware.Outcomes
	retries          prometheus.Counter
	handlerDuration  prometheus.Observer
	leaseExtensions  prometheus.Counter
	leaseLost        prometheus.Counter
	completeFailed   prometheus.Counter
	dlqPublishFailed prometheus.Counter
	ignoredAcks      prometheus.Counter
	store            *handlerStore
}

// handlerStore holds the store-operation children of one handler.
type handlerStore struct {
	duration []prometheus.Observer
	errors   []prometheus.Counter
}

// New creates the idempo metrics and registers them on reg. Nothing is
// registered on the global registry unless reg is
// [prometheus.DefaultRegisterer]. A nil opts means all defaults.
//
// Errors: [ErrNoRegisterer] for a nil reg, [ErrOptions] for invalid options,
// and the registry's error, wrapped, if registration fails. Registering a
// second Metrics with the same ConstLabels on one registry fails with a
// wrapped [prometheus.AlreadyRegisteredError] whose ExistingCollector is the
// first *Metrics, so it can be reused:
//
//	var are prometheus.AlreadyRegisteredError
//	if errors.As(err, &are) {
//		m = are.ExistingCollector.(*metrics.Metrics)
//	}
func New(reg prometheus.Registerer, opts *Options) (*Metrics, error) {
	if reg == nil {
		return nil, ErrNoRegisterer
	}
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: name, Help: help, ConstLabels: o.ConstLabels,
		}, labels)
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: name, Help: help, ConstLabels: o.ConstLabels, Buckets: o.Buckets,
		}, labels)
	}
	m := &Metrics{
		messages: counter("messages_total",
			"Deliveries finished by the idempo middleware stack, by outcome (processed, duplicate, in_progress_nacked, dead_lettered, redelivered, failed).",
			labelHandler, labelTopic, labelOutcome),
		retries: counter("retries_total",
			"In-process retries scheduled after a failed handler attempt.",
			labelHandler, labelTopic),
		handlerDuration: histogram("handler_duration_seconds",
			"Duration of handler attempts, failed ones included.",
			labelHandler, labelTopic),
		storeDuration: histogram("store_operation_duration_seconds",
			"Duration of dedup store calls, by operation.",
			labelHandler, labelOperation),
		storeErrors: counter("store_errors_total",
			"Dedup store calls that failed, by operation (a lost lease is not counted).",
			labelHandler, labelOperation),
		leaseExtensions: counter("lease_extensions_total",
			"Claim leases extended while a handler ran or waited between retries.",
			labelHandler, labelTopic),
		leaseLost: counter("lease_lost_total",
			"Claim leases lost (taken over, or not extended in time).",
			labelHandler, labelTopic),
		completeFailed: counter("complete_failed_total",
			"Deliveries whose handler succeeded but whose completion could not be recorded; acked anyway.",
			labelHandler, labelTopic),
		dlqPublishFailed: counter("dlq_publish_failed_total",
			"Dead-letter publishes that failed; the message was nacked.",
			labelHandler, labelTopic),
		ignoredAcks: counter("ignored_acks_total",
			"Ack or Nack calls by handlers on their copy of the message, which the stack ignores.",
			labelHandler, labelTopic),
	}
	m.collectors = []prometheus.Collector{
		m.messages, m.retries, m.handlerDuration, m.storeDuration, m.storeErrors,
		m.leaseExtensions, m.leaseLost, m.completeFailed, m.dlqPublishFailed, m.ignoredAcks,
	}
	m.idx.Store(&series{pairs: map[pairKey]*pairSeries{}, stores: map[string]*handlerStore{}})
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("metrics: registering the idempo collectors: %w", err)
	}
	return m, nil
}

// Describe implements [prometheus.Collector].
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors {
		c.Describe(ch)
	}
}

// Collect implements [prometheus.Collector]. It is safe to call concurrently
// with Observe.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors {
		c.Collect(ch)
	}
}

// Register creates every series of the (handler, topic) pair with value 0:
// each outcome of idempo_messages_total, each counter, both histograms, and
// the store series of handler for each operation. Series that exist from
// the start make rate() and absent() behave from the first scrape.
//
// Calling Register is optional: Observe registers a pair the first time it
// sees it. Calling it again for the same pair does nothing. handler is the
// Watermill router's handler name ("" when the stack is called outside a
// router). Safe for concurrent use.
func (m *Metrics) Register(handler, topic string) {
	m.pair(handler, topic)
}

// pair returns the cached series of (handler, topic), creating them once.
func (m *Metrics) pair(handler, topic string) *pairSeries {
	if p, ok := m.idx.Load().pairs[pairKey{handler, topic}]; ok {
		return p
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.idx.Load()
	key := pairKey{handler, topic}
	if p, ok := cur.pairs[key]; ok {
		return p
	}
	next := &series{pairs: maps.Clone(cur.pairs), stores: cur.stores}
	store, ok := cur.stores[handler]
	if !ok {
		store = m.newHandlerStore(handler)
		next.stores = maps.Clone(cur.stores)
		next.stores[handler] = store
	}
	p := &pairSeries{
		retries:          m.retries.WithLabelValues(handler, topic),
		handlerDuration:  m.handlerDuration.WithLabelValues(handler, topic),
		leaseExtensions:  m.leaseExtensions.WithLabelValues(handler, topic),
		leaseLost:        m.leaseLost.WithLabelValues(handler, topic),
		completeFailed:   m.completeFailed.WithLabelValues(handler, topic),
		dlqPublishFailed: m.dlqPublishFailed.WithLabelValues(handler, topic),
		ignoredAcks:      m.ignoredAcks.WithLabelValues(handler, topic),
		store:            store,
	}
	p.outcomes = make([]prometheus.Counter, len(middleware.Outcomes))
	for i, o := range middleware.Outcomes {
		p.outcomes[i] = m.messages.WithLabelValues(handler, topic, string(o))
	}
	next.pairs[key] = p
	m.idx.Store(next)
	return p
}

func (m *Metrics) newHandlerStore(handler string) *handlerStore {
	s := &handlerStore{
		duration: make([]prometheus.Observer, len(operations)),
		errors:   make([]prometheus.Counter, len(operations)),
	}
	for i, op := range operations {
		s.duration[i] = m.storeDuration.WithLabelValues(handler, op)
		s.errors[i] = m.storeErrors.WithLabelValues(handler, op)
	}
	return s
}

// Observe implements [middleware.Observer]: it moves the series the event
// kind maps to (see the package documentation). It is safe for concurrent
// use and does not block.
func (m *Metrics) Observe(_ context.Context, e middleware.Event) {
	p := m.pair(e.Handler, e.Topic)
	switch e.Kind {
	case middleware.KindOutcome:
		if i := outcomeIndex(e.Outcome); i >= 0 {
			p.outcomes[i].Inc()
		} else {
			m.messages.WithLabelValues(e.Handler, e.Topic, string(e.Outcome)).Inc()
		}
	case middleware.KindRetry:
		p.retries.Inc()
	case middleware.KindAttempt:
		p.handlerDuration.Observe(e.Duration.Seconds())
	case middleware.KindStoreOp:
		failed := e.Err != nil && !errors.Is(e.Err, dedup.ErrLeaseLost)
		if i := opIndex(e.Op); i >= 0 {
			p.store.duration[i].Observe(e.Duration.Seconds())
			if failed {
				p.store.errors[i].Inc()
			}
		} else {
			m.storeDuration.WithLabelValues(e.Handler, e.Op).Observe(e.Duration.Seconds())
			if failed {
				m.storeErrors.WithLabelValues(e.Handler, e.Op).Inc()
			}
		}
	case middleware.KindLeaseExtended:
		p.leaseExtensions.Inc()
	case middleware.KindLeaseLost:
		p.leaseLost.Inc()
	case middleware.KindCompleteFailed:
		p.completeFailed.Inc()
	case middleware.KindDLQPublishFailed:
		p.dlqPublishFailed.Inc()
	case middleware.KindIgnoredAck:
		p.ignoredAcks.Inc()
	}
}
