package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/metrics"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// TestMatchesStats drives every outcome through real stacks and checks the
// series against the stacks' own totals.
func TestMatchesStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stack, other := b.newStack(t), b.newStack(t)

	var mu sync.Mutex
	failedOnce := map[string]bool{}
	started, unblock := make(chan struct{}), make(chan struct{})
	handle := func(msg *message.Message) ([]*message.Message, error) {
		switch string(msg.Payload) {
		case "flaky":
			mu.Lock()
			defer mu.Unlock()
			if !failedOnce[msg.UUID] {
				failedOnce[msg.UUID] = true
				return nil, errors.New("transient")
			}
		case "poison":
			return nil, retry.Permanent(errors.New("cannot parse"))
		case "ack":
			msg.Ack()
		case "block":
			close(started)
			<-unblock
		case "slow":
			// Hold the claim until the lease is extended (or lost).
			for stack.Stats().LeaseExtensions == 0 && msg.Context().Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		return nil, nil
	}
	h, h2 := stack.Middleware(handle), other.Middleware(handle)

	require.NoError(t, deliver(h, "e1", "ok"))
	require.NoError(t, deliver(h, "e1", "ok"))
	require.NoError(t, deliver(h, "e1", "ok"))
	require.NoError(t, deliver(h, "e2", "flaky"))
	require.NoError(t, deliver(h, "e3", "poison"))
	require.NoError(t, deliver(h, "e3", "poison"))

	b.dlq.fail.Store(1)
	require.ErrorIs(t, deliver(h, "e4", "poison"), middleware.ErrDeadLetter)
	require.NoError(t, deliver(h, "e4", "poison"))

	b.store.failClaims.Store(1)
	require.ErrorIs(t, deliver(h, "e5", "ok"), middleware.ErrStore)
	require.NoError(t, deliver(h, "e5", "ok"))

	require.NoError(t, deliver(h, "e6", "ack"))

	blocked := make(chan error, 1)
	go func() { blocked <- deliver(h, "e7", "block") }()
	<-started
	require.ErrorIs(t, deliver(h2, "e7", "block"), middleware.ErrInProgressElsewhere)
	close(unblock)
	require.NoError(t, <-blocked)

	_ = deliver(h, "e8", "slow") // processed, or nacked if the lease was lost

	s := addStats(stack.Stats(), other.Stats())
	require.Equal(t, int64(3), s.Duplicates)
	require.Equal(t, int64(2), s.DeadLettered)
	require.Equal(t, int64(1), s.InProgressNacked)
	require.Equal(t, int64(1), s.Retries)
	require.Equal(t, int64(1), s.DLQPublishFailed)
	require.Equal(t, int64(1), s.StoreErrors)
	require.Equal(t, int64(1), s.IgnoredAcks)
	require.GreaterOrEqual(t, s.Processed, int64(5))
	require.GreaterOrEqual(t, s.Failed, int64(2))
	require.Positive(t, s.LeaseExtensions+s.LeaseLost)
	requireMatches(t, b.reg, "", "", s)

	// Every delivery here claims exactly once.
	require.Equal(t, sum(t, b.reg, "idempo_messages_total"),
		value(t, b.reg, "idempo_store_operation_duration_seconds", "handler", "", "operation", "claim"))
	require.Equal(t, 1.0, value(t, b.reg, "idempo_store_errors_total", "handler", "", "operation", "claim"))
	require.Equal(t, 1.0, value(t, b.reg, "idempo_store_operation_duration_seconds", "handler", "", "operation", "mark_due_for_dlq"))
}

// TestRouter runs the stack in a Watermill router, which names the handler
// and the topic.
func TestRouter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stack := b.newStack(t)

	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	var runs sync.Map
	router.AddConsumerHandler("billing", "orders", pubsub, func(msg *message.Message) error {
		if _, loaded := runs.LoadOrStore(msg.UUID, true); !loaded && string(msg.Payload) == "flaky" {
			return errors.New("transient")
		}
		return nil
	}).AddMiddleware(stack.Middleware)

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- router.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-ran)
		require.NoError(t, pubsub.Close())
	})
	<-router.Running()

	for _, m := range []*message.Message{
		message.NewMessage("o1", []byte("ok")),
		message.NewMessage("o1", []byte("ok")),
		message.NewMessage("o2", []byte("flaky")),
	} {
		require.NoError(t, pubsub.Publish("orders", m))
	}
	outcomes := func() int64 {
		s := stack.Stats()
		return s.Processed + s.Duplicates + s.InProgressNacked + s.DeadLettered + s.Failed
	}
	require.Eventually(t, func() bool { return outcomes() == 3 }, 30*time.Second, 5*time.Millisecond)

	s := stack.Stats()
	require.Equal(t, int64(2), s.Processed)
	require.Equal(t, int64(1), s.Duplicates)
	require.Equal(t, int64(1), s.Retries)
	requireMatches(t, b.reg, "billing", "orders", s)
	require.Equal(t, 3.0, value(t, b.reg, "idempo_store_operation_duration_seconds", "handler", "billing", "operation", "claim"))
}

// TestRegister checks that Register creates every series with value 0.
func TestRegister(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	require.NoError(t, err)

	count, err := testutil.GatherAndCount(reg)
	require.NoError(t, err)
	require.Zero(t, count, "no series before Register")

	m.Register("billing", "orders")
	m.Register("billing", "orders") // idempotent

	counts := map[string]int{
		"idempo_messages_total":                   len(middleware.Outcomes),
		"idempo_store_operation_duration_seconds": 7,
		"idempo_store_errors_total":               7,
	}
	for _, name := range documented {
		want := counts[name]
		if want == 0 {
			want = 1
		}
		n, err := testutil.GatherAndCount(reg, name)
		require.NoError(t, err)
		require.Equal(t, want, n, name)
		require.Zero(t, sum(t, reg, name), name)
	}
	for _, o := range middleware.Outcomes {
		require.Zero(t, value(t, reg, "idempo_messages_total", "handler", "billing", "topic", "orders", "outcome", string(o)))
	}

	const counters = `
# HELP idempo_retries_total In-process retries scheduled after a failed handler attempt.
# TYPE idempo_retries_total counter
idempo_retries_total{handler="billing",topic="orders"} 0
# HELP idempo_lease_lost_total Claim leases lost (taken over, or not extended in time).
# TYPE idempo_lease_lost_total counter
idempo_lease_lost_total{handler="billing",topic="orders"} 0
# HELP idempo_dlq_publish_failed_total Dead-letter publishes that failed; the message was nacked.
# TYPE idempo_dlq_publish_failed_total counter
idempo_dlq_publish_failed_total{handler="billing",topic="orders"} 0
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(counters),
		"idempo_retries_total", "idempo_lease_lost_total", "idempo_dlq_publish_failed_total"))

	// A second topic of the same handler shares its store series.
	m.Register("billing", "refunds")
	n, err := testutil.GatherAndCount(reg, "idempo_messages_total", "idempo_store_errors_total")
	require.NoError(t, err)
	require.Equal(t, 2*len(middleware.Outcomes)+7, n)
}

// TestObserveRegisters checks that the first event of a pair creates all
// of its series.
func TestObserveRegisters(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, &metrics.Options{ConstLabels: prometheus.Labels{"service": "billing"}})
	require.NoError(t, err)

	m.Observe(context.Background(), middleware.Event{Kind: middleware.KindRetry, Handler: "h", Topic: "t"})
	n, err := testutil.GatherAndCount(reg, "idempo_messages_total")
	require.NoError(t, err)
	require.Equal(t, len(middleware.Outcomes), n)
	require.Equal(t, 1.0, value(t, reg, "idempo_retries_total", "handler", "h", "topic", "t", "service", "billing"))

	// A lost lease is not a store error; other errors are.
	store := func(err error) {
		m.Observe(context.Background(), middleware.Event{Kind: middleware.KindStoreOp, Handler: "h", Topic: "t", Op: "extend", Err: err})
	}
	store(nil)
	store(dedup.ErrLeaseLost)
	store(errors.Join(errors.New("wrapped"), dedup.ErrLeaseLost))
	store(errDown)
	require.Equal(t, 4.0, value(t, reg, "idempo_store_operation_duration_seconds", "handler", "h", "operation", "extend", "service", "billing"))
	require.Equal(t, 1.0, value(t, reg, "idempo_store_errors_total", "handler", "h", "operation", "extend", "service", "billing"))

	// Unknown outcomes and operations (from a newer middleware) still count.
	m.Observe(context.Background(), middleware.Event{Kind: middleware.KindOutcome, Handler: "h", Topic: "t", Outcome: "new_outcome"})
	m.Observe(context.Background(), middleware.Event{Kind: middleware.KindStoreOp, Handler: "h", Topic: "t", Op: "new_op", Err: errDown})
	require.Equal(t, 1.0, value(t, reg, "idempo_messages_total", "handler", "h", "topic", "t", "outcome", "new_outcome", "service", "billing"))
	require.Equal(t, 1.0, value(t, reg, "idempo_store_errors_total", "handler", "h", "operation", "new_op", "service", "billing"))
}

func TestNewErrors(t *testing.T) {
	t.Parallel()

	_, err := metrics.New(nil, nil)
	require.ErrorIs(t, err, metrics.ErrNoRegisterer)

	reg := prometheus.NewRegistry()
	_, err = metrics.New(reg, &metrics.Options{Buckets: []float64{1, 0.5}})
	require.ErrorIs(t, err, metrics.ErrOptions)
	require.ErrorContains(t, err, "Buckets")
	_, err = metrics.New(reg, &metrics.Options{ConstLabels: prometheus.Labels{"topic": "x"}})
	require.ErrorIs(t, err, metrics.ErrOptions)
	require.ErrorContains(t, err, "ConstLabels")

	first, err := metrics.New(reg, nil)
	require.NoError(t, err)
	_, err = metrics.New(reg, nil)
	var are prometheus.AlreadyRegisteredError
	require.ErrorAs(t, err, &are)
	require.Same(t, first, are.ExistingCollector)
	require.ErrorContains(t, err, "metrics: registering")

	// Label names must be consistent within a registry; other ConstLabels
	// values with the same names make other series.
	_, err = metrics.New(reg, &metrics.Options{ConstLabels: prometheus.Labels{"service": "a"}})
	require.Error(t, err)
	reg2 := prometheus.NewRegistry()
	_, err = metrics.New(reg2, &metrics.Options{ConstLabels: prometheus.Labels{"service": "a"}})
	require.NoError(t, err)
	_, err = metrics.New(reg2, &metrics.Options{ConstLabels: prometheus.Labels{"service": "b"}})
	require.NoError(t, err)
}

func TestBuckets(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, &metrics.Options{Buckets: []float64{0.1, 1}})
	require.NoError(t, err)
	m.Observe(context.Background(), middleware.Event{Kind: middleware.KindAttempt, Duration: 500 * time.Millisecond})
	mf := family(t, reg, "idempo_handler_duration_seconds")
	require.NotNil(t, mf)
	h := mf.GetMetric()[0].GetHistogram()
	require.Len(t, h.GetBucket(), 2)
	require.Equal(t, uint64(0), h.GetBucket()[0].GetCumulativeCount())
	require.Equal(t, uint64(1), h.GetBucket()[1].GetCumulativeCount())
	require.InDelta(t, 0.5, h.GetSampleSum(), 1e-9)
}

// TestScrape checks that an HTTP scrape shows every documented metric, and
// that docs/observability.md documents every metric.
func TestScrape(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	require.NoError(t, err)
	m.Register("billing", "orders")

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()
	body := get(t, client, srv.URL)

	docs, err := os.ReadFile("../docs/observability.md")
	require.NoError(t, err)
	for _, name := range documented {
		require.Contains(t, body, "# HELP "+name+" ", name)
		require.Contains(t, body, "# TYPE "+name+" ", name)
		require.Contains(t, string(docs), "| `"+name+"` |", "docs/observability.md does not document %s", name)
	}
	// The docs quote each HELP string.
	for line := range strings.Lines(body) {
		if help, ok := strings.CutPrefix(line, "# HELP "); ok {
			_, help, _ = strings.Cut(strings.TrimSpace(help), " ")
			require.Contains(t, string(docs), "| "+help+" |")
		}
	}
}

func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// TestConcurrent observes from many goroutines while scraping (for -race).
func TestConcurrent(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	require.NoError(t, err)

	const workers, events = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			topic := []string{"a", "b", "c"}[w%3]
			for range events {
				m.Observe(context.Background(), middleware.Event{Kind: middleware.KindOutcome, Handler: "h", Topic: topic, Outcome: middleware.OutcomeProcessed})
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			_, err := reg.Gather()
			require.NoError(t, err)
		}
	})
	wg.Wait()
	require.Equal(t, float64(workers*events), sum(t, reg, "idempo_messages_total"))
}

func TestObserveDoesNotAllocate(t *testing.T) {
	m, err := metrics.New(prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	ctx := context.Background()
	events := []middleware.Event{
		{Kind: middleware.KindOutcome, Handler: "h", Topic: "t", Outcome: middleware.OutcomeDuplicate},
		{Kind: middleware.KindAttempt, Handler: "h", Topic: "t", Duration: time.Millisecond},
		{Kind: middleware.KindStoreOp, Handler: "h", Topic: "t", Op: "claim", Duration: time.Millisecond, Err: errDown},
		{Kind: middleware.KindLeaseExtended, Handler: "h", Topic: "t"},
	}
	m.Register("h", "t")
	allocs := testing.AllocsPerRun(100, func() {
		for _, e := range events {
			m.Observe(ctx, e)
		}
	})
	require.Zero(t, allocs)
}

func BenchmarkObserve(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry(), nil)
	require.NoError(b, err)
	ctx := context.Background()
	e := middleware.Event{Kind: middleware.KindOutcome, Handler: "h", Topic: "t", Outcome: middleware.OutcomeProcessed}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(ctx, e)
		}
	})
}
