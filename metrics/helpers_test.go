package metrics_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/metrics"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// documented lists every metric name docs/observability.md documents.
var documented = []string{
	"idempo_messages_total",
	"idempo_retries_total",
	"idempo_handler_duration_seconds",
	"idempo_store_operation_duration_seconds",
	"idempo_store_errors_total",
	"idempo_lease_extensions_total",
	"idempo_lease_lost_total",
	"idempo_complete_failed_total",
	"idempo_dlq_publish_failed_total",
	"idempo_ignored_acks_total",
}

var quiet = slog.New(slog.DiscardHandler)

var errDown = errors.New("down")

// flakyPublisher is a gochannel publisher that can be told to fail.
type flakyPublisher struct {
	message.Publisher
	fail atomic.Int32 // fail this many publishes
}

func (p *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.fail.Add(-1) >= 0 {
		return errDown
	}
	p.fail.Store(0)
	return p.Publisher.Publish(topic, msgs...)
}

// flakyStore is a memstore whose Claim can be told to fail.
type flakyStore struct {
	dedup.Store
	failClaims atomic.Int32
}

func (s *flakyStore) Claim(ctx context.Context, key dedup.Key, req dedup.ClaimRequest) (dedup.ClaimResult, error) {
	if s.failClaims.Add(-1) >= 0 {
		return dedup.ClaimResult{}, errDown
	}
	s.failClaims.Store(0)
	return s.Store.Claim(ctx, key, req)
}

type testBundle struct {
	reg   *prometheus.Registry
	m     *metrics.Metrics
	store *flakyStore
	dlq   *flakyPublisher
	// newStack builds a stack on the shared store, DLQ and metrics.
	newStack func(t *testing.T) *middleware.Stack
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	require.NoError(t, err)
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { require.NoError(t, pubsub.Close()) })
	b := &testBundle{
		reg:   reg,
		m:     m,
		store: &flakyStore{Store: memstore.New(nil)},
		dlq:   &flakyPublisher{Publisher: pubsub},
	}
	b.newStack = func(t *testing.T) *middleware.Stack {
		t.Helper()
		stack, err := middleware.New(middleware.Config{
			Store:     b.store,
			DLQ:       dlq.Config{Publisher: b.dlq},
			Observer:  m,
			Logger:    quiet,
			NackDelay: -1,
			Lease:     middleware.MinLease,
			Retry:     retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Jitter: -1, MaxAttempts: 3},
		})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, stack.Close()) })
		return stack
	}
	return b
}

// deliver passes one message through a wrapped handler, as the router would.
func deliver(h message.HandlerFunc, id, payload string) error {
	msg := message.NewMessage(id, []byte(payload))
	msg.SetContext(context.Background())
	_, err := h(msg)
	return err
}

// family returns the gathered family name, or nil.
func family(t *testing.T, g prometheus.Gatherer, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

// value returns the value of the series of name with exactly the given
// labels (name, value pairs): a counter's value or a histogram's sample
// count. It fails the test if the series does not exist.
func value(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mf := family(t, g, name)
	require.NotNil(t, mf, "no metric family %s", name)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, metric := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range metric.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if len(got) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			if gv, ok := got[k]; !ok || gv != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return metric.GetCounter().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(metric.GetHistogram().GetSampleCount())
		default:
			t.Fatalf("unexpected type %v of %s", mf.GetType(), name)
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// sum adds up every series of name (counter values or histogram counts).
func sum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mf := family(t, g, name)
	require.NotNil(t, mf, "no metric family %s", name)
	total := 0.0
	for _, metric := range mf.GetMetric() {
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			total += float64(metric.GetHistogram().GetSampleCount())
		} else {
			total += metric.GetCounter().GetValue()
		}
	}
	return total
}

func addStats(a, b middleware.Stats) middleware.Stats {
	return middleware.Stats{
		Processed:        a.Processed + b.Processed,
		Duplicates:       a.Duplicates + b.Duplicates,
		InProgressNacked: a.InProgressNacked + b.InProgressNacked,
		DeadLettered:     a.DeadLettered + b.DeadLettered,
		Failed:           a.Failed + b.Failed,
		Retries:          a.Retries + b.Retries,
		Attempts:         a.Attempts + b.Attempts,
		Panics:           a.Panics + b.Panics,
		LeaseExtensions:  a.LeaseExtensions + b.LeaseExtensions,
		LeaseLost:        a.LeaseLost + b.LeaseLost,
		CompleteFailed:   a.CompleteFailed + b.CompleteFailed,
		DLQPublishFailed: a.DLQPublishFailed + b.DLQPublishFailed,
		StoreErrors:      a.StoreErrors + b.StoreErrors,
		IgnoredAcks:      a.IgnoredAcks + b.IgnoredAcks,
	}
}

// requireMatches checks that the series of (handler, topic) equal the
// stack's own totals.
func requireMatches(t *testing.T, g prometheus.Gatherer, handler, topic string, s middleware.Stats) {
	t.Helper()
	ht := []string{"handler", handler, "topic", topic}
	outcome := func(o middleware.Outcome) float64 {
		return value(t, g, "idempo_messages_total", append(ht, "outcome", string(o))...)
	}
	require.Equal(t, s.Processed, int64(outcome(middleware.OutcomeProcessed)), "processed")
	require.Equal(t, s.Duplicates, int64(outcome(middleware.OutcomeDuplicate)), "duplicate")
	require.Equal(t, s.InProgressNacked, int64(outcome(middleware.OutcomeInProgress)), "in_progress_nacked")
	require.Equal(t, s.DeadLettered, int64(outcome(middleware.OutcomeDeadLettered)), "dead_lettered")
	require.Equal(t, s.Failed, int64(outcome(middleware.OutcomeFailed)), "failed")
	require.Equal(t, s.Retries, int64(value(t, g, "idempo_retries_total", ht...)), "retries")
	require.Equal(t, s.Attempts, int64(value(t, g, "idempo_handler_duration_seconds", ht...)), "attempts")
	require.Equal(t, s.StoreErrors, int64(sum(t, g, "idempo_store_errors_total")), "store errors")
	require.Equal(t, s.LeaseExtensions, int64(value(t, g, "idempo_lease_extensions_total", ht...)), "lease extensions")
	require.Equal(t, s.LeaseLost, int64(value(t, g, "idempo_lease_lost_total", ht...)), "lease lost")
	require.Equal(t, s.CompleteFailed, int64(value(t, g, "idempo_complete_failed_total", ht...)), "complete failed")
	require.Equal(t, s.DLQPublishFailed, int64(value(t, g, "idempo_dlq_publish_failed_total", ht...)), "dlq publish failed")
	require.Equal(t, s.IgnoredAcks, int64(value(t, g, "idempo_ignored_acks_total", ht...)), "ignored acks")
}
