package demo_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/cmd/idempo/internal/demo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// sarama's metrics library (Kafka runs) starts one process-wide
		// ticker goroutine the first time a meter is created; it never stops.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

// A scrape of /metrics during a demo run finds every documented series, and
// its counts agree with the ledger.
func TestMetricsMatchTheLedger(t *testing.T) {
	var families map[string]float64
	var names map[string]bool
	l, err := demo.Run(context.Background(), demo.Options{
		Events: 2000, Faults: demo.DefaultFaults, MetricsAddr: "127.0.0.1:0",
		AfterSettled: func(url string) {
			resp, err := http.Get(url)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
			require.NoError(t, err)
			families, names = map[string]float64{}, map[string]bool{}
			for name, f := range fams {
				names[name] = true
				for _, m := range f.GetMetric() {
					key := name
					for _, lp := range m.GetLabel() {
						if lp.GetName() == "outcome" {
							key += "/" + lp.GetValue()
						}
					}
					if c := m.GetCounter(); c != nil {
						families[key] += c.GetValue()
					}
				}
			}
		},
	})
	require.NoError(t, err)
	require.NoError(t, l.Verdict())
	for _, n := range []string{
		"idempo_messages_total", "idempo_retries_total", "idempo_handler_duration_seconds",
		"idempo_store_operation_duration_seconds", "idempo_store_errors_total", "idempo_lease_extensions_total",
		"idempo_lease_lost_total", "idempo_complete_failed_total", "idempo_dlq_publish_failed_total", "idempo_ignored_acks_total",
	} {
		require.True(t, names[n], "series %s missing from the scrape", n)
	}
	require.EqualValues(t, l.Effects, families["idempo_messages_total/processed"])
	require.EqualValues(t, l.DuplicatesSkipped, families["idempo_messages_total/duplicate"])
	require.EqualValues(t, l.DeadLettered, families["idempo_messages_total/dead_lettered"])
	require.EqualValues(t, l.Retries, families["idempo_retries_total"])
	require.EqualValues(t, l.InProgressNacked, families["idempo_messages_total/in_progress_nacked"])
	total := families["idempo_messages_total/processed"] + families["idempo_messages_total/duplicate"] +
		families["idempo_messages_total/dead_lettered"] + families["idempo_messages_total/in_progress_nacked"] + families["idempo_messages_total/failed"]
	require.EqualValues(t, l.Deliveries, total, "every delivery has exactly one outcome")
}

// On Kafka in key and partition order, the events of each key take effect in
// publish order through the fault mix; GoChannel and unordered Kafka keep no
// order, so order_violations is null there.
func TestOrderViolationsByOrdering(t *testing.T) {
	for _, tc := range []struct {
		broker, ordering string
		checked          bool
	}{
		{"kafka", "key", true},
		{"kafka", "partition", true},
		{"kafka", "unordered", false},
		{"gochannel", "key", false},
	} {
		t.Run(tc.broker+"/"+tc.ordering, func(t *testing.T) {
			l, err := demo.Run(context.Background(), demo.Options{
				Events: 2000, Faults: demo.DefaultFaults, Broker: tc.broker, Store: "memory", Ordering: tc.ordering,
			})
			require.NoError(t, err)
			require.NoError(t, l.Verdict())
			if !tc.checked {
				require.Nil(t, l.OrderViolations)
				return
			}
			require.NotNil(t, l.OrderViolations)
			require.Zero(t, *l.OrderViolations)
		})
	}
}
