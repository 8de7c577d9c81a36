package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/metrics"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Options configures [Run].
type Options struct {
	// Events is the number of unique events. Default 20000.
	Events int
	// Faults is the fault mix. Zero value: no faults; the CLI passes DefaultFaults.
	Faults Faults
	// Consumers is the number of consumers of one dedup scope. On GoChannel
	// each sees every message, so they are concurrent twins. Default 3.
	Consumers int
	// InFlight is how many messages each consumer handles at once. Watermill's
	// router starts a goroutine per message it receives, and GoChannel hands
	// over every published message at once, so without a bound thousands of
	// deliveries would queue for the store (SQLite has one connection) and
	// outlive their leases. Default 32.
	InFlight int
	// Broker and Store are the --broker and --store URLs.
	Broker, Store string
	// Ordering is the --ordering of Kafka consumers: "partition" (the
	// default), "key" or "unordered". Other brokers ignore it.
	Ordering string
	// Timeout bounds the whole run. Default 5 minutes.
	Timeout time.Duration
	// Stderr receives the start line and progress. Default io.Discard.
	Stderr io.Writer
	// Progress shows a progress line (on a terminal).
	Progress bool
	// Logger receives the stack's logs. Default: discard.
	Logger *slog.Logger
	// RunID isolates this run's topics, queues, keys and tables. Default random.
	RunID string
	// StackHook, if set, may change the stack's config before it is built
	// (tests use it to break the stack on purpose).
	StackHook func(*middleware.Config)
	// MetricsAddr, if set, serves Prometheus metrics on /metrics there
	// while the demo runs (":0" picks a free port).
	MetricsAddr string
	// Keep leaves what the run created on shared servers when it ends: the
	// topic and the DLQ (Kafka topics, RabbitMQ queues) and the dedup
	// records (SQL table, SQLite file, Redis keys). By default all of it is
	// deleted at the end.
	Keep bool
	// Outbox runs the producer half too (see runOutbox): needs a SQL Store.
	Outbox bool
	// Relays is the number of outbox relays of an Outbox run. Default 2.
	Relays int
	// OutboxOutsideTx breaks an Outbox run on purpose: producers write the
	// event in a transaction of its own, not the business one, so a
	// rolled-back change still has its event (tests show the ledger
	// catches it).
	OutboxOutsideTx bool
	// AfterSettled, if set, is called once every event is settled, before
	// anything shuts down, with the metrics URL ("" without MetricsAddr).
	AfterSettled func(metricsURL string)
}

// Ledger is the outcome of a run. The JSON field names are stable.
type Ledger struct {
	Published            int   `json:"published"`
	UniqueEvents         int   `json:"unique_events"`
	Deliveries           int64 `json:"deliveries"`
	Effects              int   `json:"effects"`
	DuplicatesSkipped    int64 `json:"duplicates_skipped"`
	Retries              int64 `json:"retries"`
	DeadLettered         int   `json:"dead_lettered"`
	ExpectedDeadLettered int   `json:"expected_dead_lettered"`
	// Lost counts events neither effected nor dead-lettered when the run
	// finished or timed out. An interrupted run claims no loss: Lost is 0
	// and Unsettled counts what it did not see settled.
	Lost          int `json:"lost"`
	DoubleEffects int `json:"double_effects"`
	// OrderViolations counts events whose first effect came after the
	// first effect of a later event of the same key (dead letters
	// excluded); nil where the broker keeps no order (RabbitMQ, GoChannel,
	// Kafka with --ordering unordered).
	OrderViolations *int  `json:"order_violations"`
	ElapsedMS       int64 `json:"elapsed_ms"`

	AckLossRedeliveries int64 `json:"ack_loss_redeliveries"`
	InProgressNacked    int64 `json:"in_progress_nacked"`
	Panics              int64 `json:"panics"`
	LeaseLost           int64 `json:"lease_lost"`
	CompleteFailed      int64 `json:"complete_failed"`
	DLQPublishFailed    int64 `json:"dlq_publish_failed"`
	TimedOut            bool  `json:"timed_out"`
	// Interrupted is set when the caller's context ended the run (Ctrl-C):
	// the ledger then has no verdict.
	Interrupted bool `json:"interrupted"`
	// Unsettled counts events neither effected nor dead-lettered when the
	// run ended.
	Unsettled int    `json:"unsettled"`
	RunID     string `json:"run_id"`
	Broker    string `json:"broker"`
	Store     string `json:"store"`
	// DLQTopic is the run's dead-letter topic (RabbitMQ: stream queue), the
	// --topic of `idempo dlq`.
	DLQTopic string `json:"dlq_topic"`

	// The --outbox run's own fields (absent otherwise). UniqueEvents is
	// then the committed business rows, Effects those with their first-hop
	// effect, and Lost those missing an effect at either hop.
	RolledBack      int `json:"rolled_back,omitempty"`
	FollowUpEffects int `json:"follow_up_effects,omitempty"`
	// PhantomEffects counts effects, at either hop, of business rows whose
	// transaction rolled back.
	PhantomEffects *int `json:"phantom_effects,omitempty"`
	// RelayRepublished counts publishes the relays saw fail after the
	// broker took the message (a crash between publish and mark).
	RelayRepublished int64 `json:"relay_republished,omitempty"`
}

// ErrVerdict is matched by the error of [Ledger.Verdict].
var ErrVerdict = errors.New("invariant violated")

// ErrInterrupted is matched by the error of [Ledger.Verdict] for a run the
// caller interrupted: an unfinished run is not judged.
var ErrInterrupted = errors.New("interrupted")

// Verdict returns nil when every invariant holds: nothing lost, no double
// effect, exactly the poison events dead-lettered, and every event either
// effected or dead-lettered. An interrupted run gets no verdict: the error
// matches [ErrInterrupted] instead.
func (l Ledger) Verdict() error {
	if l.Interrupted {
		return l.InterruptedError()
	}
	var problems []string
	if l.Lost != 0 {
		problems = append(problems, fmt.Sprintf("lost = %d", l.Lost))
	}
	if l.DoubleEffects != 0 {
		problems = append(problems, fmt.Sprintf("double_effects = %d", l.DoubleEffects))
	}
	if l.PhantomEffects != nil && *l.PhantomEffects != 0 {
		problems = append(problems, fmt.Sprintf("phantom_effects = %d", *l.PhantomEffects))
	}
	if l.OrderViolations != nil && *l.OrderViolations != 0 {
		problems = append(problems, fmt.Sprintf("order_violations = %d", *l.OrderViolations))
	}
	if l.DeadLettered != l.ExpectedDeadLettered {
		problems = append(problems, fmt.Sprintf("dead_lettered = %d, expected %d", l.DeadLettered, l.ExpectedDeadLettered))
	}
	if l.Effects+l.DeadLettered != l.UniqueEvents {
		problems = append(problems, fmt.Sprintf("effects + dead_lettered = %d, unique_events = %d", l.Effects+l.DeadLettered, l.UniqueEvents))
	}
	if l.TimedOut {
		problems = append(problems, "timed out before every event was settled")
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrVerdict, strings.Join(problems, "; "))
}

// InterruptedError describes an interrupted run; it matches [ErrInterrupted].
func (l Ledger) InterruptedError() error {
	return fmt.Errorf("%w after %d of %d events settled; an unfinished run gets no verdict", ErrInterrupted, l.UniqueEvents-l.Unsettled, l.UniqueEvents)
}

// NewRunID returns a fresh run ID (8 hex characters).
func NewRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (o *Options) setDefaults() {
	if o.Events == 0 {
		o.Events = 20000
	}
	if o.Consumers == 0 {
		o.Consumers = 3
	}
	if o.InFlight <= 0 {
		o.InFlight = 32
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.RunID == "" {
		o.RunID = NewRunID()
	}
	if o.Ordering == "" {
		o.Ordering = "partition"
	}
}

// errTransient and errPoison are the injected failures.
var (
	errTransient = errors.New("demo: injected transient failure")
	errPoison    = errors.New("demo: injected poison event (fails on every attempt)")
)

type run struct {
	opts     Options
	plan     *Plan
	index    map[string]int
	effects  []atomic.Int32
	attempts []atomic.Int32
	dead     []atomic.Bool
	lostAck  []atomic.Bool
	// first stamps each event's first effect from clock.
	first []atomic.Int64
	clock atomic.Int64

	deliveries  atomic.Int64
	acked       atomic.Int64
	sent        atomic.Int64 // messages put on the topic: publishes + ack-loss redeliveries
	redelivered atomic.Int64
	lastAck     atomic.Int64 // unix nanos
}

// Run runs the demo and returns its ledger. The error reports a setup
// failure (bad URL, unreachable server); invariant violations are in
// Ledger.Verdict.
func Run(ctx context.Context, opts Options) (Ledger, error) {
	opts.setDefaults()
	bspec, err := backend.ParseBroker(opts.Broker)
	if err != nil {
		return Ledger{}, err
	}
	sspec, err := backend.ParseStore(opts.Store)
	if err != nil {
		return Ledger{}, err
	}
	if opts.Consumers < 1 {
		return Ledger{}, fmt.Errorf("--consumers must be >= 1, got %d", opts.Consumers)
	}
	if opts.Outbox {
		return runOutbox(ctx, opts, bspec, sspec)
	}
	plan, err := NewPlan("ev-"+opts.RunID, opts.Events, opts.Faults)
	if err != nil {
		return Ledger{}, err
	}
	ordering, err := backend.ParseOrdering(opts.Ordering)
	if err != nil {
		return Ledger{}, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.WithPartitions(opts.Consumers), backend.WithLease(demoLease))
	if err != nil {
		return Ledger{}, fmt.Errorf("open broker %s: %w", bspec, err)
	}
	defer func() { _ = broker.Close() }()
	broker.Ordering = ordering
	store, err := backend.OpenStore(ctx, sspec, opts.RunID)
	if err != nil {
		return Ledger{}, fmt.Errorf("open store %s: %w", sspec, err)
	}
	defer func() { _ = store.Close() }()
	if store.Drop != nil && !opts.Keep {
		defer func() {
			if err := store.Drop(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintf(opts.Stderr, "idempo demo: could not remove the run's dedup records: %v\n", err)
			}
		}()
	}
	fmt.Fprintf(opts.Stderr, "idempo demo: broker: %s, store: %s, run %s, %d events, %d consumers, DLQ %s\n",
		broker.Display, store.Display, opts.RunID, opts.Events, opts.Consumers, DLQTopic(opts.RunID))

	r := &run{
		opts:     opts,
		plan:     plan,
		index:    make(map[string]int, len(plan.IDs)),
		effects:  make([]atomic.Int32, len(plan.IDs)),
		attempts: make([]atomic.Int32, len(plan.IDs)),
		dead:     make([]atomic.Bool, len(plan.IDs)),
		lostAck:  make([]atomic.Bool, len(plan.IDs)),
		first:    make([]atomic.Int64, len(plan.IDs)),
	}
	for i, id := range plan.IDs {
		r.index[id] = i
	}
	l, err := r.execute(ctx, broker, store)
	if parent.Err() != nil {
		l.Interrupted, l.TimedOut, l.Lost = true, false, 0
	}
	return l, err
}

// Topic and DLQTopic name the topics (RabbitMQ: queues) of a run.
func Topic(runID string) string { return "idempo-demo-" + runID }

// DLQTopic names the dead-letter topic of a run.
func DLQTopic(runID string) string { return Topic(runID) + ".dlq" }

func (r *run) execute(ctx context.Context, broker *backend.Broker, store *backend.Store) (Ledger, error) {
	start := time.Now()
	topic, dlqTopic := Topic(r.opts.RunID), DLQTopic(r.opts.RunID)
	scope := "demo-" + r.opts.RunID
	group := "idempo-demo-" + r.opts.RunID

	cfg := middleware.Config{
		Store:     store.Store,
		DLQ:       dlq.Config{Publisher: broker.DLQ()},
		Scope:     scope,
		Lease:     demoLease,
		Retention: time.Hour,
		Retry:     retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxAttempts: 4},
		NackDelay: 5 * time.Millisecond,
		Logger:    r.opts.Logger,
	}
	metricsURL := ""
	if r.opts.MetricsAddr != "" {
		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg, nil)
		if err != nil {
			return Ledger{}, err
		}
		cfg.Observer = m
		stop, addr, err := metrics.Serve(ctx, r.opts.MetricsAddr, reg)
		if err != nil {
			return Ledger{}, fmt.Errorf("--metrics-addr: %w", err)
		}
		defer func() { _ = stop() }()
		metricsURL = "http://" + addr + "/metrics"
		fmt.Fprintf(r.opts.Stderr, "idempo demo: metrics on %s\n", metricsURL)
	}
	if r.opts.StackHook != nil {
		r.opts.StackHook(&cfg)
	}
	stack, err := middleware.New(cfg)
	if err != nil {
		return Ledger{}, err
	}
	defer func() { _ = stack.Close() }()

	if broker.Delete != nil && !r.opts.Keep {
		// Runs when execute returns: the router has stopped by then.
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := broker.Delete(dctx, topic, dlqTopic); err != nil {
				fmt.Fprintf(r.opts.Stderr, "idempo demo: could not delete the run's topics: %v\n", err)
			}
		}()
	}
	if broker.Prepare != nil {
		for _, t := range []string{topic, dlqTopic} {
			if err := broker.Prepare(ctx, t, group); err != nil {
				return Ledger{}, fmt.Errorf("prepare %s: %w", t, err)
			}
		}
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return Ledger{}, err
	}
	for i := range r.opts.Consumers {
		sub, err := broker.NewSubscriber(group, i)
		if err != nil {
			return Ledger{}, fmt.Errorf("subscriber %d: %w", i, err)
		}
		h := r.outer(broker, topic, stack.Middleware(r.handle))
		router.AddConsumerHandler(fmt.Sprintf("consumer-%d", i), topic, sub, func(m *message.Message) error { _, err := h(m); return err })
	}
	dsub, err := broker.DLQSubscriber(group + "-dlq")
	if err != nil {
		return Ledger{}, fmt.Errorf("dlq subscriber: %w", err)
	}
	router.AddConsumerHandler("dlq-reader", dlqTopic, dsub, r.readDLQ)

	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-routerDone:
		return Ledger{}, fmt.Errorf("router: %w", err)
	}

	published := 0
	for i, id := range r.plan.IDs {
		if ctx.Err() != nil {
			break // interrupted or out of time: the ledger says so
		}
		copies := 1
		if r.plan.Faults[i]&FaultDup != 0 {
			copies = 2
		}
		for c := range copies {
			r.sent.Add(1)
			m := r.newMessage(id, i)
			if c > 0 {
				Resend(m, broker.Spec.Kind)
			}
			if err := broker.Publisher.Publish(topic, m); err != nil {
				_ = router.Close()
				r.routerStopped(<-routerDone)
				return Ledger{}, fmt.Errorf("publish %s: %w", id, err)
			}
			published++
		}
	}

	timedOut := r.wait(ctx, broker.FanOut)
	if r.opts.AfterSettled != nil {
		r.opts.AfterSettled(metricsURL)
	}
	closeErr := router.Close()
	r.routerStopped(<-routerDone)
	if closeErr != nil {
		r.opts.Logger.Warn("router close", "error", closeErr)
	}
	if r.opts.Progress {
		fmt.Fprint(r.opts.Stderr, "\r\033[K")
	}

	st := stack.Stats()
	l := Ledger{
		Published:            published,
		UniqueEvents:         len(r.plan.IDs),
		Deliveries:           r.deliveries.Load(),
		DuplicatesSkipped:    st.Duplicates,
		Retries:              st.Retries,
		ExpectedDeadLettered: r.plan.Count(FaultPoison),
		ElapsedMS:            time.Since(start).Milliseconds(),
		AckLossRedeliveries:  r.redelivered.Load(),
		InProgressNacked:     st.InProgressNacked,
		Panics:               st.Panics,
		LeaseLost:            st.LeaseLost,
		CompleteFailed:       st.CompleteFailed,
		DLQPublishFailed:     st.DLQPublishFailed,
		TimedOut:             timedOut,
		RunID:                r.opts.RunID,
		DLQTopic:             dlqTopic,
		Broker:               broker.Display,
		Store:                store.Display,
	}
	for i := range r.plan.IDs {
		n := r.effects[i].Load()
		if n > 0 {
			l.Effects++
		}
		if n > 1 {
			l.DoubleEffects++
		}
		if r.dead[i].Load() {
			l.DeadLettered++
		}
		if n == 0 && !r.dead[i].Load() {
			l.Unsettled++
		}
	}
	l.Lost = l.Unsettled
	if broker.KeepsOrder() {
		first := make([]int64, len(r.first))
		for i := range r.first {
			first[i] = r.first[i].Load()
		}
		v := OrderViolations(first, func(i int) bool { return r.dead[i].Load() })
		l.OrderViolations = &v
	}
	return l, nil
}

// Resend marks m as a producer's re-send of an event it already published.
// On NATS JetStream, whose duplicate window drops a message published again
// with the same ID, the copy gets a Nats-Msg-Id of its own, as a re-send
// after the window would, so that the consumers still see the duplicate and
// the dedup store is what skips it. Other brokers deliver it as it is.
func Resend(m *message.Message, kind backend.Kind) {
	if kind == backend.NATS {
		m.Metadata.Set(nats.MsgIDKey, m.UUID+"/resend-"+watermill.NewShortUUID())
	}
}

func (r *run) routerStopped(err error) {
	if err != nil {
		r.opts.Logger.Warn("router stopped with an error", "error", err)
	}
}

func (r *run) newMessage(id string, i int) *message.Message {
	m := message.NewMessage(id, Payload(id, i))
	m.Metadata.Set("demo_run", r.opts.RunID)
	SetKey(m, i)
	return m
}

// settled reports whether every event has its effect or its dead letter.
func (r *run) settled() (int, bool) {
	n := 0
	for i := range r.plan.IDs {
		if r.effects[i].Load() > 0 || r.dead[i].Load() {
			n++
		}
	}
	return n, n == len(r.plan.IDs)
}

// wait returns once every event is settled and every message sent has been
// acked by every consumer that sees it (then late duplicates have had their
// chance to show a double effect), or when ctx ends (reporting true).
func (r *run) wait(ctx context.Context, fanOut bool) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	perMsg := int64(1)
	if fanOut {
		perMsg = int64(r.opts.Consumers)
	}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		n, all := r.settled()
		if r.opts.Progress {
			fmt.Fprintf(r.opts.Stderr, "\r\033[Ksettled %d/%d events, %d deliveries", n, len(r.plan.IDs), r.deliveries.Load())
		}
		if all && r.acked.Load() >= r.sent.Load()*perMsg && time.Since(time.Unix(0, r.lastAck.Load())) > 100*time.Millisecond {
			return false
		}
	}
}

// outer counts deliveries and simulates lost acks: after the stack acks an
// ack-loss event for the first time, the message is delivered again.
func (r *run) outer(broker *backend.Broker, topic string, h message.HandlerFunc) message.HandlerFunc {
	inFlight := make(chan struct{}, r.opts.InFlight)
	return func(msg *message.Message) ([]*message.Message, error) {
		select {
		case inFlight <- struct{}{}:
		case <-msg.Context().Done():
			return nil, msg.Context().Err()
		}
		defer func() { <-inFlight }()
		r.deliveries.Add(1)
		outs, err := h(msg)
		if err != nil {
			return outs, err
		}
		if i, ok := r.index[msg.UUID]; ok && r.plan.Faults[i]&FaultAckLoss != 0 && r.lostAck[i].CompareAndSwap(false, true) {
			r.sent.Add(1)
			r.redelivered.Add(1)
			again := r.newMessage(msg.UUID, i)
			Resend(again, broker.Spec.Kind)
			if perr := broker.Publisher.Publish(topic, again); perr != nil {
				r.sent.Add(-1)
				r.opts.Logger.Warn("demo: could not simulate the lost ack's redelivery", "error", perr)
			}
		}
		r.acked.Add(1)
		r.lastAck.Store(time.Now().UnixNano())
		return outs, nil
	}
}

// handle is the demo's business handler: its effect is one increment of the
// event's counter.
func (r *run) handle(msg *message.Message) ([]*message.Message, error) {
	i, ok := r.index[msg.UUID]
	if !ok {
		return nil, retry.Permanent(fmt.Errorf("demo: unknown event %q", msg.UUID))
	}
	f := r.plan.Faults[i]
	attempt := r.attempts[i].Add(1)
	switch {
	case f&FaultPoison != 0:
		return nil, errPoison
	case f&FaultPanic != 0 && attempt == 1:
		panic("demo: injected panic on the first attempt")
	case f&FaultFail != 0 && attempt <= 2 && f&FaultPanic == 0:
		return nil, errTransient
	}
	if r.effects[i].Add(1) == 1 {
		r.first[i].Store(r.clock.Add(1))
	}
	return nil, nil
}

func (r *run) readDLQ(msg *message.Message) error {
	if i, ok := r.index[msg.Metadata.Get(dlqmeta.KeyEventID)]; ok {
		r.dead[i].Store(true)
	}
	return nil
}

// demoLease is the stack's Lease in a demo run (and what brokers with a
// redelivery clock of their own are told).
const demoLease = 10 * time.Second
