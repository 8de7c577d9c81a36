package verify

import (
	"bufio"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/IBM/sarama"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// ConsumerOptions configures one consumer process.
type ConsumerOptions struct {
	Broker, Store string
	// Ordering is the Kafka consumer's --ordering ("" for partition).
	Ordering string
	RunID    string
	Events   int
	Faults   demo.Faults
	// Ledger is the SQLite file effects are recorded in (plain mode).
	Ledger string
	// Inbox records effects in the store's database, in the inbox transaction.
	Inbox bool
	// Index names this consumer (for the logs).
	Index int
	// Break runs a deliberately broken consumer (tests): "no-dedup" keeps
	// retries and the DLQ but drops the dedup store.
	Break string
	// Lease of the stack; short so takeovers after kills are quick.
	Lease time.Duration
	// Report receives one line per handler start ("B <event>") and per
	// finished delivery ("E <event>"), written unbuffered.
	Report io.Writer
	Logger *slog.Logger
	// Debug logs the broker client's connection and rebalance events to
	// Logger's handler at Info level, prefixed with the consumer index.
	Debug bool
}

// names shared by the parent and its consumers.
func topicName(run string) string    { return "idempo-verify-" + run }
func dlqTopicName(run string) string { return topicName(run) + ".dlq" }
func groupName(run string) string    { return "idempo-verify-" + run }
func scopeName(run string) string    { return "verify-" + run }
func effectsTable(run string) string { return "idempo_verify_effects_" + run }

// RunConsumer consumes until ctx ends. It returns an error for setup failures.
func RunConsumer(ctx context.Context, o ConsumerOptions) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	bspec, err := backend.ParseBroker(o.Broker)
	if err != nil {
		return err
	}
	sspec, err := backend.ParseStore(o.Store)
	if err != nil {
		return err
	}
	plan, err := demo.NewPlan("ev-"+o.RunID, o.Events, o.Faults)
	if err != nil {
		return err
	}
	var brokerLogger *slog.Logger // nil logs nothing
	if o.Debug {
		brokerLogger = o.Logger.With("consumer", o.Index)
		sarama.Logger = log.New(debugWriter{o.Logger, o.Index}, "", 0)
	}
	broker, err := backend.OpenBroker(ctx, bspec, brokerLogger, backend.WithFastFailover(), backend.WithLease(cmp.Or(o.Lease, 2*time.Second)))
	if err != nil {
		return fmt.Errorf("open broker: %w", err)
	}
	defer func() { _ = broker.Close() }()
	if o.Ordering != "" {
		if broker.Ordering, err = backend.ParseOrdering(o.Ordering); err != nil {
			return err
		}
	}
	store, err := backend.OpenStore(ctx, sspec, o.RunID)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() { _ = store.Close() }()

	c := &consumer{o: o, plan: plan, index: map[string]int{}, attempts: make([]atomic.Int32, o.Events), report: o.Report}
	for i, id := range plan.IDs {
		c.index[id] = i
	}
	if o.Inbox {
		if _, ok := store.Store.(*sqlstore.Store); !ok {
			return fmt.Errorf("--inbox needs a SQL store, got %s", sspec)
		}
		c.insert = fmt.Sprintf("INSERT INTO %s (event_id, consumer, at) VALUES (%s, %s, %s)", effectsTable(o.RunID), ph(store, 1), ph(store, 2), ph(store, 3))
	} else {
		db, err := sqlstore.OpenSQLite(o.Ledger)
		if err != nil {
			return err
		}
		defer func() { _ = db.Close() }()
		c.ledger = db
		c.insert = fmt.Sprintf("INSERT INTO %s (event_id, consumer, at) VALUES (?, ?, ?)", effectsTable(o.RunID))
	}
	lease := o.Lease
	if lease == 0 {
		lease = 2 * time.Second
	}
	stack, err := middleware.New(middleware.Config{
		Store:         store.Store,
		DLQ:           dlq.Config{Publisher: broker.DLQ()},
		Scope:         scopeName(o.RunID),
		Lease:         lease,
		Retention:     time.Hour,
		Retry:         retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 20 * time.Millisecond, MaxAttempts: 4},
		NackDelay:     50 * time.Millisecond,
		Transactional: o.Inbox,
		Logger:        o.Logger,
		Observer: middleware.ObserverFunc(func(_ context.Context, e middleware.Event) {
			switch e.Kind {
			case middleware.KindOutcome:
				c.line('O', string(e.Outcome)+" "+e.EventID)
			case middleware.KindRetry:
				c.line('R', e.EventID)
			}
		}),
	})
	if err != nil {
		return err
	}
	defer func() { _ = stack.Close() }()

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	sub, err := broker.NewSubscriber(groupName(o.RunID), o.Index)
	if err != nil {
		return err
	}
	wrapped := stack.Middleware(c.handle)
	if o.Break == "no-dedup" {
		if wrapped, err = broken(broker.DLQ(), dlqTopicName(o.RunID), c); err != nil {
			return err
		}
	}
	lostAck := make([]atomic.Bool, o.Events)
	router.AddConsumerHandler("verify-consumer", topicName(o.RunID), sub, func(m *message.Message) error {
		_, err := wrapped(m)
		if err != nil {
			return err
		}
		// A lost ack: the effect is done and recorded, the broker redelivers.
		if i, ok := c.index[m.UUID]; ok && plan.Faults[i]&demo.FaultAckLoss != 0 && lostAck[i].CompareAndSwap(false, true) {
			return errLostAck
		}
		return nil
	})
	return router.Run(ctx)
}

// debugWriter turns the Kafka client's log lines into records of Logger.
type debugWriter struct {
	l     *slog.Logger
	index int
}

func (w debugWriter) Write(p []byte) (int, error) {
	w.l.Info(strings.TrimSpace(string(p)), "consumer", w.index, "client", "sarama")
	return len(p), nil
}

// broken is the consumer of a deliberately broken build: retries and a
// poison queue as Watermill users compose them by hand (Watermill's own
// middlewares, the poison queue outside the retries), but no dedup store.
func broken(pub message.Publisher, dlqTopic string, c *consumer) (message.HandlerFunc, error) {
	poison, err := wmw.PoisonQueue(pub, dlqTopic)
	if err != nil {
		return nil, err
	}
	rt := wmw.Retry{MaxRetries: 3, InitialInterval: time.Millisecond, MaxInterval: 20 * time.Millisecond}
	h := poison(rt.Middleware(c.handle))
	return func(m *message.Message) ([]*message.Message, error) {
		outs, err := h(m)
		outcome := middleware.OutcomeProcessed
		if err != nil {
			outcome = middleware.OutcomeFailed
		}
		c.line('O', string(outcome)+" "+m.UUID)
		return outs, err
	}, nil
}

// ph returns the n-th bind placeholder of the store's dialect.
func ph(store *backend.Store, n int) string {
	if st, ok := store.Store.(*sqlstore.Store); ok && st.Dialect() == sqlstore.Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

type consumer struct {
	o        ConsumerOptions
	plan     *demo.Plan
	index    map[string]int
	attempts []atomic.Int32
	ledger   *sql.DB
	insert   string
	mu       sync.Mutex
	report   io.Writer
}

func (c *consumer) line(kind byte, id string) {
	if c.report == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = c.report.Write([]byte(string(kind) + " " + id + "\n"))
}

var (
	errTransient = errors.New("verify: injected transient failure")
	errPoison    = errors.New("verify: injected poison event")
	errLostAck   = errors.New("verify: injected lost ack (the message is redelivered)")
)

func (c *consumer) handle(m *message.Message) ([]*message.Message, error) {
	i, ok := c.index[m.UUID]
	if !ok {
		return nil, retry.Permanent(fmt.Errorf("verify: unknown event %q", m.UUID))
	}
	f := c.plan.Faults[i]
	attempt := c.attempts[i].Add(1)
	switch {
	case f&demo.FaultPoison != 0:
		return nil, errPoison
	case f&demo.FaultPanic != 0 && attempt == 1:
		panic("verify: injected panic on the first attempt")
	case f&demo.FaultFail != 0 && attempt <= 2 && f&demo.FaultPanic == 0:
		return nil, errTransient
	}
	c.line('B', m.UUID)
	ctx := m.Context()
	at := time.Now().UnixNano() // orders first effects (order_violations)
	if tx, ok := sqlstore.TxFromContext(ctx); ok {
		_, err := tx.ExecContext(ctx, c.insert, m.UUID, c.o.Index, at)
		return nil, err
	}
	_, err := c.ledger.ExecContext(ctx, c.insert, m.UUID, c.o.Index, at)
	return nil, err
}

// readReport parses a consumer's report stream: it returns when r ends.
// Lines are "B <event>" (handler effect starts), "O <outcome> <event>" (a
// delivery ended) and "R <event>" (an in-process retry).
func readReport(r io.Reader, onLine func(kind byte, id string)) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		b := sc.Bytes()
		if len(b) > 2 && b[1] == ' ' {
			onLine(b[0], string(b[2:]))
		}
	}
}

// consumerArgs are the command-line arguments of a consumer process (the
// broker and store URLs go in its environment: see [childCommand]).
func consumerArgs(o ConsumerOptions) []string {
	f := o.Faults
	args := []string{
		"--run", o.RunID, "--events", strconv.Itoa(o.Events),
		"--dup-rate", fmt.Sprint(f.DupRate), "--ack-loss-rate", fmt.Sprint(f.AckLossRate), "--fail-rate", fmt.Sprint(f.FailRate),
		"--poison-rate", fmt.Sprint(f.PoisonRate), "--panic-rate", fmt.Sprint(f.PanicRate), "--seed", strconv.FormatUint(f.Seed, 10),
		"--ledger", o.Ledger, "--index", strconv.Itoa(o.Index), "--lease", o.Lease.String(),
	}
	if o.Break != "" {
		args = append(args, "--break", o.Break)
	}
	if o.Debug {
		args = append(args, "--debug")
	}
	if o.Inbox {
		args = append(args, "--inbox")
	}
	if o.Ordering != "" {
		args = append(args, "--ordering", o.Ordering)
	}
	return args
}
