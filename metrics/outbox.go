package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempo/idempo/outbox"
)

// OutboxCollector exports the state of an [outbox.Outbox] and the counters
// of its relays in this process. Register it on your registry:
//
//	reg.MustRegister(metrics.NewOutboxCollector(ob, relay))
//
// Each scrape runs [outbox.Outbox.Status] (a scan of the unsent and dead
// rows) with a 5-second timeout; a failure is reported as an invalid metric,
// so the scrape fails visibly. Safe for concurrent use.
//
//	idempo_outbox_pending_rows{topic}               gauge    unsent rows, due or waiting for a retry
//	idempo_outbox_dead_rows{topic}                  gauge    rows in the dead table
//	idempo_outbox_oldest_pending_seconds{topic}     gauge    age of the oldest unsent row (database clock)
//	idempo_outbox_relay_published_rows_total        counter  rows published and marked by the relays
//	idempo_outbox_relay_failures_total              counter  failed row publishes
//	idempo_outbox_relay_dead_rows_total             counter  rows the relays moved to the dead table
type OutboxCollector struct {
	ob     *outbox.Outbox
	relays []*outbox.Relay

	pending, dead, oldest          *prometheus.Desc
	published, failures, deadMoved *prometheus.Desc
}

var _ prometheus.Collector = (*OutboxCollector)(nil)

// NewOutboxCollector returns a collector of ob and of relays (none, when
// the relays run elsewhere).
func NewOutboxCollector(ob *outbox.Outbox, relays ...*outbox.Relay) *OutboxCollector {
	topic := []string{labelTopic}
	return &OutboxCollector{
		ob: ob, relays: relays,
		pending:   prometheus.NewDesc("idempo_outbox_pending_rows", "Unsent outbox rows, due or waiting for a retry.", topic, nil),
		dead:      prometheus.NewDesc("idempo_outbox_dead_rows", "Rows in the outbox's dead table.", topic, nil),
		oldest:    prometheus.NewDesc("idempo_outbox_oldest_pending_seconds", "Age of the oldest unsent outbox row.", topic, nil),
		published: prometheus.NewDesc("idempo_outbox_relay_published_rows_total", "Outbox rows published and marked by the relays of this process.", nil, nil),
		failures:  prometheus.NewDesc("idempo_outbox_relay_failures_total", "Failed publishes of outbox rows by the relays of this process.", nil, nil),
		deadMoved: prometheus.NewDesc("idempo_outbox_relay_dead_rows_total", "Outbox rows moved to the dead table by the relays of this process.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *OutboxCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.dead, c.oldest, c.published, c.failures, c.deadMoved} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *OutboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, err := c.ob.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.pending, err)
	}
	for _, s := range status {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending), s.Topic)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.Dead), s.Topic)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, s.OldestPending.Seconds(), s.Topic)
	}
	var st outbox.RelayStats
	for _, r := range c.relays {
		s := r.Stats()
		st.Published += s.Published
		st.Failures += s.Failures
		st.Dead += s.Dead
	}
	ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(c.deadMoved, prometheus.CounterValue, float64(st.Dead))
}
