package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/outbox"
	"github.com/idempo/idempo/retry"
)

// The outbox run's fault mix, in percent of events: producers roll the
// business transaction back, the first-hop handler fails once after its
// effect write, and the relay's publisher reports a failure after the
// broker took the message (as a relay killed between publish and mark
// would: the row is published again with the same UUID).
const (
	outboxRollbackPct   = 10
	outboxFailPct       = 10
	outboxRepublishPct  = 5
	outboxProducers     = 4
	defaultOutboxRelays = 2
)

// ErrOutboxStore is returned for --outbox with a store that is not SQL.
var ErrOutboxStore = errors.New("--outbox needs a SQL --store (sqlite, sqlite://PATH, postgres://… or mysql://…): the producers' outbox and the consumers' inbox live in its database")

// OutboxWorld is the database side of an outbox run, shared by demo and
// verify (whose producer and consumer processes each build their own on
// the same tables): business rows, the outbox, the effects of both hops.
// Safe for concurrent use.
type OutboxWorld struct {
	RunID  string
	Events int
	// Committed counts the business transactions this process committed.
	Committed atomic.Int64

	db             *sql.DB
	dialect        sqlstore.Dialect
	ob             *outbox.Outbox
	tables         outboxTables
	topic1, topic2 string
	failOnce       []atomic.Bool
}

type outboxTables struct{ biz, hop1, hop2 string }

// NewOutboxWorld names the tables and topics of run (topics start with
// topicPrefix) on db.
func NewOutboxWorld(db *sql.DB, dialect sqlstore.Dialect, topicPrefix, runID string, events int) (*OutboxWorld, error) {
	w := &OutboxWorld{
		RunID: runID, Events: events, db: db, dialect: dialect,
		tables: outboxTables{
			biz: "idempo_ob_biz_" + runID, hop1: "idempo_ob_hop1_" + runID, hop2: "idempo_ob_hop2_" + runID,
		},
		topic1: topicPrefix + runID, topic2: topicPrefix + runID + ".follow-up",
		failOnce: make([]atomic.Bool, events),
	}
	var err error
	w.ob, err = outbox.New(db, &outbox.Options{Table: "idempo_outbox_" + runID})
	return w, err
}

// Outbox is the run's outbox.
func (r *OutboxWorld) Outbox() *outbox.Outbox { return r.ob }

// Topic1 is where producers' events go; Topic2 the follow-ups.
func (r *OutboxWorld) Topic1() string { return r.topic1 }

// Topic2 is where the first hop's follow-up events go.
func (r *OutboxWorld) Topic2() string { return r.topic2 }

// StackConfig is base for hop 1 or 2: the transactional inbox, and at
// hop 1 the chained outbox for the follow-up events.
func (r *OutboxWorld) StackConfig(base middleware.Config, hop int) middleware.Config {
	base.Transactional = true
	base.Scope = "ob-" + r.RunID + "-hop" + strconv.Itoa(hop)
	if hop == 1 {
		base.Outbox, base.OutputTopic = r.ob, r.topic2
	}
	return base
}

// rollsBack reports whether event i's transaction is rolled back on purpose.
func (r *OutboxWorld) rollsBack(i int) bool {
	return chance("rollback"+strconv.Itoa(i), outboxRollbackPct)
}

// outboxRun is one run of the outbox demo.
type outboxRun struct {
	*OutboxWorld
	opts Options
	// repub holds the UUIDs whose publish was already reported failed once.
	repub       sync.Map
	republished atomic.Int64
	published   atomic.Int64
}

// chance picks s with probability p percent, the same way in every run.
func chance(s string, p uint32) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()%100 < p
}

// outboxEventID names event i of a run.
func outboxEventID(runID string, i int) string { return "ob-" + runID + "-" + strconv.Itoa(i) }

// runOutbox is [Run] with Options.Outbox: producers write a business row
// and its event in one transaction (some rolled back on purpose), relays
// publish the outbox, first-hop consumers apply the effect and emit a
// follow-up event through the chained outbox in the inbox's transaction,
// and second-hop consumers apply the follow-up's effect.
func runOutbox(ctx context.Context, opts Options, bspec, sspec backend.Spec) (Ledger, error) {
	switch sspec.Kind {
	case backend.SQLite, backend.Postgres, backend.MySQL:
	default:
		return Ledger{}, ErrOutboxStore
	}
	if opts.Relays <= 0 {
		opts.Relays = defaultOutboxRelays
	}
	ordering, err := backend.ParseOrdering(opts.Ordering)
	if err != nil {
		return Ledger{}, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.WithPartitions(opts.Consumers))
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
	ss, ok := store.Store.(*sqlstore.Store)
	if !ok {
		return Ledger{}, ErrOutboxStore
	}
	world, err := NewOutboxWorld(ss.DB(), ss.Dialect(), "idempo-demo-", opts.RunID, opts.Events)
	if err != nil {
		return Ledger{}, err
	}
	r := &outboxRun{OutboxWorld: world, opts: opts}
	if !opts.Keep {
		defer r.Drop(context.WithoutCancel(ctx), opts.Stderr)
	}
	if err := r.Create(ctx); err != nil {
		return Ledger{}, err
	}
	fmt.Fprintf(opts.Stderr, "idempo demo --outbox: broker: %s, store: %s, run %s, %d events (%d%% rolled back), %d consumers per hop, %d relays\n",
		broker.Display, store.Display, opts.RunID, opts.Events, outboxRollbackPct, opts.Consumers, opts.Relays)
	l, err := r.execute(ctx, broker, store)
	if parent.Err() != nil {
		l.Interrupted, l.TimedOut, l.Lost = true, false, 0
	}
	return l, err
}

func (r *outboxRun) execute(ctx context.Context, broker *backend.Broker, store *backend.Store) (Ledger, error) {
	start := time.Now()
	topic1, topic2 := r.Topic1(), r.Topic2()
	dlqTopic := DLQTopic(r.opts.RunID)
	base := middleware.Config{
		Store: store.Store, DLQ: dlq.Config{Publisher: broker.DLQ(), Topic: func(string, string) string { return dlqTopic }},
		Transactional: true, Lease: 10 * time.Second, Retention: time.Hour,
		Retry:     retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxAttempts: 10},
		NackDelay: 5 * time.Millisecond, Logger: r.opts.Logger,
	}
	cfg1, cfg2 := r.StackConfig(base, 1), r.StackConfig(base, 2)
	if r.opts.StackHook != nil {
		r.opts.StackHook(&cfg1)
	}
	stacks := make([]*middleware.Stack, 2)
	for i, cfg := range []middleware.Config{cfg1, cfg2} {
		s, err := middleware.New(cfg)
		if err != nil {
			return Ledger{}, err
		}
		defer func() { _ = s.Close() }()
		stacks[i] = s
	}
	if broker.Delete != nil && !r.opts.Keep {
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := broker.Delete(dctx, topic1, topic2, dlqTopic); err != nil {
				fmt.Fprintf(r.opts.Stderr, "idempo demo: could not delete the run's topics: %v\n", err)
			}
		}()
	}
	group := "idempo-demo-" + r.opts.RunID
	if broker.Prepare != nil {
		for _, t := range []string{topic1, topic2, dlqTopic} {
			if err := broker.Prepare(ctx, t, group); err != nil {
				return Ledger{}, fmt.Errorf("prepare %s: %w", t, err)
			}
		}
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return Ledger{}, err
	}
	for hop, topic := range []string{topic1, topic2} {
		h := stacks[hop].Middleware(r.Handler(hop + 1))
		for i := range r.opts.Consumers {
			sub, err := broker.NewSubscriber(group+"-hop"+strconv.Itoa(hop+1), i)
			if err != nil {
				return Ledger{}, fmt.Errorf("subscriber %d: %w", i, err)
			}
			router.AddConsumerHandler(fmt.Sprintf("hop%d-consumer-%d", hop+1, i), topic, sub, func(m *message.Message) error { _, err := h(m); return err })
		}
	}
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-routerDone:
		return Ledger{}, fmt.Errorf("router: %w", err)
	}
	relayCtx, stopRelays := context.WithCancel(ctx)
	relayDone := make(chan error, r.opts.Relays)
	for range r.opts.Relays {
		relay, err := outbox.NewRelay(r.Outbox(), outbox.RelayConfig{Publisher: &flakyPublisher{r: r, next: broker.Publisher}, PollInterval: 10 * time.Millisecond})
		if err != nil {
			stopRelays()
			return Ledger{}, err
		}
		go func() { relayDone <- relay.Run(relayCtx) }()
	}
	var prodErr error
	var wg sync.WaitGroup
	var errOnce sync.Once
	for w := range outboxProducers {
		wg.Go(func() {
			if err := r.Produce(ctx, w, outboxProducers, r.opts.OutboxOutsideTx); err != nil && ctx.Err() == nil {
				errOnce.Do(func() { prodErr = err })
			}
		})
	}
	wg.Wait()
	timedOut := prodErr == nil && r.wait(ctx)
	stopRelays()
	for range r.opts.Relays {
		if err := <-relayDone; err != nil {
			r.opts.Logger.Warn("relay stopped with an error", "error", err)
		}
	}
	closeErr := router.Close()
	if err := <-routerDone; err != nil {
		r.opts.Logger.Warn("router stopped with an error", "error", err)
	}
	if closeErr != nil {
		r.opts.Logger.Warn("router close", "error", closeErr)
	}
	if r.opts.Progress {
		fmt.Fprint(r.opts.Stderr, "\r\033[K")
	}
	if prodErr != nil {
		return Ledger{}, prodErr
	}
	l, err := r.Ledger(context.WithoutCancel(ctx), broker.KeepsOrder())
	if err != nil {
		return Ledger{}, err
	}
	l.Published, l.RelayRepublished = int(r.published.Load()), r.republished.Load()
	st1, st2 := stacks[0].Stats(), stacks[1].Stats()
	l.Deliveries = st1.Processed + st1.Duplicates + st2.Processed + st2.Duplicates
	l.DuplicatesSkipped = st1.Duplicates + st2.Duplicates
	l.Retries = st1.Retries + st2.Retries
	l.DeadLettered = int(st1.DeadLettered + st2.DeadLettered)
	l.InProgressNacked = st1.InProgressNacked + st2.InProgressNacked
	l.LeaseLost = st1.LeaseLost + st2.LeaseLost
	l.TimedOut = timedOut
	l.ElapsedMS = time.Since(start).Milliseconds()
	l.RunID, l.Broker, l.Store, l.DLQTopic = r.opts.RunID, broker.Display, store.Display, dlqTopic
	return l, nil
}

// flakyPublisher reports a failure after the broker took some messages the
// first time, as a relay killed between publish and mark would leave them.
type flakyPublisher struct {
	r    *outboxRun
	next message.Publisher
}

func (p *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.next.Publish(topic, msgs...); err != nil {
		return err
	}
	p.r.published.Add(int64(len(msgs)))
	for _, m := range msgs {
		if chance("republish"+m.UUID, outboxRepublishPct) {
			if _, again := p.r.repub.LoadOrStore(m.UUID, struct{}{}); !again {
				p.r.republished.Add(1)
				return errors.New("demo: publish reported failed after the broker took it")
			}
		}
	}
	return nil
}

func (p *flakyPublisher) Close() error { return nil }
