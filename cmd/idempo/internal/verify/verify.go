// Package verify runs idempo's guarantees against real brokers and stores
// with real consumer processes that it kills and restarts, and optional
// broker and store restarts, then judges the ledger by guarantee level.
package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq/amqpdlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/metrics"
	"github.com/idempo/idempo/middleware"
)

// Options configures [Run].
type Options struct {
	Broker, Store string
	// Ordering is the --ordering of the Kafka consumers: "partition" (the
	// default), "key" or "unordered". RabbitMQ ignores it.
	Ordering string
	// Events is the number of unique events. Default 2000.
	Events int
	Faults demo.Faults
	// Consumers is the number of consumer processes. Default 3.
	Consumers int
	// Kills is how many times a random consumer is killed with SIGKILL
	// and restarted. Default 3.
	Kills int
	// Inbox runs the transactional inbox. Default: on for SQL stores.
	Inbox *bool
	// BrokerRestartCmd and StoreRestartCmd, if set, are run with sh -c at a
	// random moment of the run (Restarts times each, default 1).
	BrokerRestartCmd, StoreRestartCmd string
	Restarts                          int
	// Timeout bounds the run. Default 5 minutes.
	Timeout time.Duration
	// Command starts a consumer process: argv[0] and the arguments that come
	// before "verify-consumer". Default: this executable.
	Command []string
	// Break starts consumers in a deliberately broken mode (tests): "no-dedup"
	// runs the handler without the stack.
	Break string
	// OwnRedis starts a redis-server of verify's own on a spare loopback
	// port, with appendonly yes and appendfsync always, as the store (Store
	// is then ignored), and restarts it (SIGKILL, then start on the same
	// data) StoreRestarts times at random moments. The shared Redis keeps
	// nothing on disk, so restarting it would wipe every record.
	OwnRedis      bool
	StoreRestarts int
	// MetricsAddr, if set, serves the consumers' outcomes as Prometheus
	// metrics on /metrics there while verify runs.
	MetricsAddr string
	// Lease of the consumers' stack. Default 2s.
	Lease  time.Duration
	Stderr io.Writer
	// Progress shows a progress line (on a terminal).
	Progress bool
	Logger   *slog.Logger
	RunID    string
	// Outbox runs the producer half too: Producers producer processes
	// write business rows and their events in one transaction (some
	// rolled back), Relays relay processes publish the outbox, and the
	// consumer processes apply the effect in the SQL inbox and chain a
	// follow-up event through the outbox to a second hop; every kind is
	// killed in turn. Needs a SQL Store. Defaults: 2 producers, 2 relays.
	Outbox            bool
	Producers, Relays int
	// Debug makes the consumers log their broker client's connection and
	// rebalance events to Stderr.
	Debug bool
}

// Result is the verdict's input: the demo's ledger fields plus the harness's.
type Result struct {
	demo.Ledger
	Kills                   int    `json:"kills"`
	Restarts                int    `json:"restarts"`
	MaxAllowedDoubleEffects int    `json:"max_allowed_double_effects"`
	Inbox                   bool   `json:"inbox"`
	GuaranteeLevel          string `json:"guarantee_level"`
	// Outbox marks a run of the producer half too; KillsByRole splits
	// Kills by kind of process (producer, relay, consumer).
	Outbox      bool           `json:"outbox,omitempty"`
	KillsByRole map[string]int `json:"kills_by_role,omitempty"`
	// Crashes counts processes of an outbox run that exited on their own
	// (e.g. refused by a database at its connection limit) and were
	// started again.
	Crashes int `json:"crashes,omitempty"`
}

// Verdict returns nil when the guarantees of the level hold: nothing lost,
// every poison event in the DLQ, and double effects within what the kills can
// explain (none for the transactional inbox).
func (r Result) Verdict() error {
	if r.Interrupted {
		return r.InterruptedError()
	}
	var problems []string
	if r.Lost != 0 {
		problems = append(problems, fmt.Sprintf("lost = %d", r.Lost))
	}
	if r.OrderViolations != nil && *r.OrderViolations != 0 {
		problems = append(problems, fmt.Sprintf("order_violations = %d", *r.OrderViolations))
	}
	if r.PhantomEffects != nil && *r.PhantomEffects != 0 {
		problems = append(problems, fmt.Sprintf("phantom_effects = %d", *r.PhantomEffects))
	}
	if r.DoubleEffects > r.MaxAllowedDoubleEffects {
		problems = append(problems, fmt.Sprintf("double_effects = %d > max_allowed_double_effects = %d", r.DoubleEffects, r.MaxAllowedDoubleEffects))
	}
	if r.DeadLettered != r.ExpectedDeadLettered {
		problems = append(problems, fmt.Sprintf("dead_lettered = %d, expected %d", r.DeadLettered, r.ExpectedDeadLettered))
	}
	if r.TimedOut {
		problems = append(problems, "timed out before every event was settled")
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", demo.ErrVerdict, strings.Join(problems, "; "))
}

func (o *Options) setDefaults() {
	if o.Events == 0 {
		o.Events = 2000
	}
	if o.Consumers == 0 {
		o.Consumers = 3
	}
	if o.Kills == 0 {
		o.Kills = 3
	}
	if o.Kills < 0 {
		o.Kills = 0
	}
	if o.Restarts == 0 {
		o.Restarts = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Lease == 0 {
		o.Lease = 2 * time.Second
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.RunID == "" {
		o.RunID = demo.NewRunID()
	}
	if o.Ordering == "" {
		o.Ordering = "partition"
	}
	if o.Producers <= 0 {
		o.Producers = 2
	}
	if o.Relays <= 0 {
		o.Relays = 2
	}
}

// Run publishes the events, runs the consumer processes with kills and
// restarts until every event is settled, and returns the result.
func Run(ctx context.Context, o Options) (Result, error) {
	o.setDefaults()
	bspec, err := backend.ParseBroker(o.Broker)
	if err != nil {
		return Result{}, err
	}
	if bspec.Kind == backend.GoChannel {
		return Result{}, errors.New("verify needs a broker other processes can reach: --broker kafka (embedded), kafka://… or amqp://… (gochannel lives in one process)")
	}
	if o.Outbox {
		sspec, err := backend.ParseStore(o.Store)
		if err != nil {
			return Result{}, err
		}
		return runOutbox(ctx, o, bspec, sspec)
	}
	var own *ownRedis
	if o.OwnRedis {
		if own, err = startOwnRedis(); err != nil {
			return Result{}, err
		}
		defer own.stop()
		o.Store = own.url()
	}
	sspec, err := backend.ParseStore(o.Store)
	if err != nil {
		return Result{}, err
	}
	if sspec.Kind == backend.Memory {
		return Result{}, errors.New("verify needs a store shared by processes: --store redis://…, postgres://…, mysql://… or sqlite[://PATH] (memory lives in one process)")
	}
	inbox := sspec.Kind == backend.Postgres || sspec.Kind == backend.MySQL || sspec.Kind == backend.SQLite
	if o.Inbox != nil {
		inbox = *o.Inbox
	}
	if inbox && sspec.Kind != backend.Postgres && sspec.Kind != backend.MySQL && sspec.Kind != backend.SQLite {
		return Result{}, fmt.Errorf("the transactional inbox needs a SQL store, got %s", sspec)
	}
	plan, err := demo.NewPlan("ev-"+o.RunID, o.Events, o.Faults)
	if err != nil {
		return Result{}, err
	}
	ordering, err := backend.ParseOrdering(o.Ordering)
	if err != nil {
		return Result{}, err
	}
	if len(o.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return Result{}, fmt.Errorf("cannot find this executable to start consumers: %w", err)
		}
		o.Command = []string{exe}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.WithPartitions(o.Consumers))
	if err != nil {
		return Result{}, fmt.Errorf("open broker %s: %w", bspec, err)
	}
	defer func() { _ = broker.Close() }()
	if bspec.Kind == backend.NATS && broker.Delete != nil {
		// NATS streams keep every message until deleted: remove the run's.
		defer func() {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer dcancel()
			_ = broker.Delete(dctx, topicName(o.RunID), dlqTopicName(o.RunID))
		}()
	}
	broker.Ordering = ordering
	store, err := backend.OpenStore(ctx, sspec, o.RunID)
	if err != nil {
		return Result{}, fmt.Errorf("open store %s: %w", sspec, err)
	}
	defer func() { _ = store.Close() }()
	if store.Drop != nil {
		defer func() { _ = store.Drop(context.WithoutCancel(ctx)) }()
	}

	tmp, err := os.MkdirTemp("", "idempo-verify-"+o.RunID+"-")
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	ledgerPath := filepath.Join(tmp, "ledger.db")

	// The effects table: in the store's database for the inbox, else in a
	// SQLite ledger of our own.
	var ledger *sql.DB
	if inbox {
		ledger = store.Store.(*sqlstore.Store).DB()
	} else {
		db, err := sqlstore.OpenSQLite(ledgerPath)
		if err != nil {
			return Result{}, err
		}
		defer func() { _ = db.Close() }()
		ledger = db
	}
	if _, err := ledger.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s (event_id VARCHAR(64) NOT NULL, consumer INTEGER NOT NULL, at BIGINT NOT NULL)", effectsTable(o.RunID))); err != nil {
		return Result{}, fmt.Errorf("create the effects table: %w", err)
	}
	if inbox {
		defer func() {
			_, _ = ledger.ExecContext(context.WithoutCancel(ctx), "DROP TABLE "+effectsTable(o.RunID))
		}()
	}

	fmt.Fprintf(o.Stderr, "idempo verify: broker: %s, store: %s (inbox %v), run %s, %d events, %d consumers, %d kills\n",
		broker.Display, store.Display, inbox, o.RunID, o.Events, o.Consumers, o.Kills)

	h := &harness{
		o: o, plan: plan, broker: broker, storeURL: store.URL, storeDisplay: store.Display, ledgerPath: ledgerPath, inbox: inbox, dead: map[string]bool{}, own: own,
		byOutcome: map[middleware.Outcome]int64{},
	}
	if o.MetricsAddr != "" {
		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg, nil)
		if err != nil {
			return Result{}, err
		}
		m.Register("verify-consumer", topicName(o.RunID))
		stop, addr, err := metrics.Serve(ctx, o.MetricsAddr, reg)
		if err != nil {
			return Result{}, fmt.Errorf("--metrics-addr: %w", err)
		}
		defer func() { _ = stop() }()
		h.metrics = m
		fmt.Fprintf(o.Stderr, "idempo verify: metrics on http://%s/metrics\n", addr)
	}
	r, err := h.run(ctx, ledger)
	if parent.Err() != nil {
		r.Interrupted, r.TimedOut, r.Lost = true, false, 0
	}
	return r, err
}

type harness struct {
	o        Options
	plan     *demo.Plan
	broker   *backend.Broker
	storeURL string
	// storeDisplay names the store in the result (credentials redacted).
	storeDisplay string
	ledgerPath   string
	inbox        bool
	own          *ownRedis

	mu         sync.Mutex
	dead       map[string]bool
	outcomes   int64
	lastReport time.Time
	kills      int
	restarts   int
	maxAllowed int
	retries    int64
	byOutcome  map[middleware.Outcome]int64
	metrics    *metrics.Metrics
}

// observe feeds the parent's metrics (with --metrics-addr) from the
// consumers' reports. Called with h.mu held.
func (h *harness) observe(e middleware.Event) {
	if h.metrics != nil {
		h.metrics.Observe(context.Background(), e)
	}
}

type child struct {
	cmd      *exec.Cmd
	reported chan struct{} // closed when the report stream ended
	inflight map[string]bool
}

func (h *harness) run(ctx context.Context, ledger *sql.DB) (Result, error) {
	start := time.Now()
	topic, dlqTopic, group := topicName(h.o.RunID), dlqTopicName(h.o.RunID), groupName(h.o.RunID)
	if h.broker.Prepare != nil {
		for _, t := range []string{topic, dlqTopic} {
			if err := h.broker.Prepare(ctx, t, group); err != nil {
				return Result{}, fmt.Errorf("prepare %s: %w", t, err)
			}
		}
	}
	// The DLQ reader.
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return Result{}, err
	}
	dsub, err := h.broker.DLQSubscriber(group + "-dlq")
	if err != nil {
		return Result{}, err
	}
	router.AddConsumerHandler("verify-dlq-reader", dlqTopic, dsub, func(m *message.Message) error {
		id := m.Metadata.Get(dlqmeta.KeyEventID)
		if id == "" { // a DLQ written without dedup: the event ID is the UUID
			id = m.Metadata.Get(dlqmeta.KeyOriginalUUID)
		}
		if id == "" { // Watermill's own poison queue republishes the original
			id = m.UUID
		}
		h.mu.Lock()
		h.dead[id] = true
		h.mu.Unlock()
		return nil
	})
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	defer func() {
		_ = router.Close()
		if err := <-routerDone; err != nil {
			h.o.Logger.Warn("verify: the DLQ reader stopped with an error", "error", err)
		}
	}()
	select {
	case <-router.Running():
	case err := <-routerDone:
		return Result{}, fmt.Errorf("dlq reader: %w", err)
	}

	published := 0
	for i, id := range h.plan.IDs {
		if ctx.Err() != nil {
			break // interrupted or out of time: the result says so
		}
		n := 1
		if h.plan.Faults[i]&demo.FaultDup != 0 {
			n = 2
		}
		for c := range n {
			m := message.NewMessage(id, demo.Payload(id, i))
			demo.SetKey(m, i)
			if c > 0 {
				demo.Resend(m, h.broker.Spec.Kind)
			}
			if err := h.broker.Publisher.Publish(topic, m); err != nil {
				return Result{}, fmt.Errorf("publish %s: %w", id, err)
			}
			published++
		}
	}

	children := make([]*child, h.o.Consumers)
	for i := range children {
		if children[i], err = h.start(i); err != nil {
			return Result{}, err
		}
	}
	defer func() {
		for _, c := range children {
			h.stop(c)
		}
	}()

	timedOut := h.drive(ctx, children, ledger)

	for i, c := range children {
		h.stop(c)
		children[i] = nil
	}
	children = nil

	r := Result{Kills: h.kills, Restarts: h.restarts, MaxAllowedDoubleEffects: h.maxAllowed, Inbox: h.inbox}
	if h.inbox {
		r.MaxAllowedDoubleEffects = 0
		r.GuaranteeLevel = "sql-inbox: exactly-once effects"
	} else {
		r.GuaranteeLevel = "duplicates suppressed; a killed in-flight handler may repeat its effect"
	}
	counts, err := effectCounts(context.WithoutCancel(ctx), ledger, h.o.RunID)
	if err != nil {
		return Result{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Published = published
	r.UniqueEvents = len(h.plan.IDs)
	r.Deliveries = h.outcomes
	r.ExpectedDeadLettered = h.plan.Count(demo.FaultPoison)
	r.ElapsedMS = time.Since(start).Milliseconds()
	r.TimedOut = timedOut
	r.RunID = h.o.RunID
	r.DLQTopic = dlqTopic
	r.Broker = h.broker.Display
	r.Store = h.storeDisplay
	for _, id := range h.plan.IDs {
		n := counts[id]
		if n > 0 {
			r.Effects++
		}
		if n > 1 {
			r.DoubleEffects++
		}
		if h.dead[id] {
			r.DeadLettered++
		}
		if n == 0 && !h.dead[id] {
			r.Unsettled++
		}
	}
	r.Lost = r.Unsettled
	if h.broker.KeepsOrder() {
		v, err := h.orderViolations(context.WithoutCancel(ctx), ledger)
		if err != nil {
			return Result{}, err
		}
		r.OrderViolations = &v
	}
	r.DuplicatesSkipped = h.byOutcome[middleware.OutcomeDuplicate]
	r.InProgressNacked = h.byOutcome[middleware.OutcomeInProgress]
	r.Retries = h.retries
	return r, nil
}

// orderViolations reads each event's first effect from the ledger and
// counts those that came after a later event's of their key (dead letters
// excluded). Effects are stamped with the consumer's clock, which all
// consumer processes on this machine share.
func (h *harness) orderViolations(ctx context.Context, ledger *sql.DB) (int, error) {
	rows, err := ledger.QueryContext(ctx, fmt.Sprintf("SELECT event_id, MIN(at) FROM %s GROUP BY event_id", effectsTable(h.o.RunID)))
	if err != nil {
		return 0, fmt.Errorf("read the ledger: %w", err)
	}
	defer func() { _ = rows.Close() }()
	at := map[string]int64{}
	for rows.Next() {
		var id string
		var t int64
		if err := rows.Scan(&id, &t); err != nil {
			return 0, err
		}
		at[id] = t
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	first := make([]int64, len(h.plan.IDs))
	for i, id := range h.plan.IDs {
		first[i] = at[id]
	}
	return demo.OrderViolations(first, func(i int) bool { return h.dead[h.plan.IDs[i]] }), nil
}

func effectCounts(ctx context.Context, db *sql.DB, run string) (map[string]int, error) {
	rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT event_id, COUNT(*) FROM %s GROUP BY event_id", effectsTable(run)))
	if err != nil {
		return nil, fmt.Errorf("read the ledger: %w", err)
	}
	defer func() { _ = rows.Close() }()
	m := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		m[id] = n
	}
	return m, rows.Err()
}

// drive kills, restarts and waits until every event is settled and the
// consumers have gone quiet. It returns true on timeout.
func (h *harness) drive(ctx context.Context, children []*child, ledger *sql.DB) bool {
	rnd := rand.New(rand.NewPCG(h.o.Faults.Seed, 0xfa11))
	killsLeft := h.o.Kills
	brokerRestarts, storeRestarts := 0, 0
	if h.o.BrokerRestartCmd != "" {
		brokerRestarts = h.o.Restarts
	}
	if h.o.StoreRestartCmd != "" {
		storeRestarts = h.o.Restarts
	}
	if h.own != nil {
		storeRestarts = h.o.StoreRestarts
	}
	// Faults are spread over the run by progress, not by time, so a fast
	// run sees every one it asked for: the k-th of n comes once k/(n+1) of
	// the events have settled (the consumers are then connected and
	// working, which is what a kill or a restart must interrupt), at least
	// 300 ms after the one before.
	faults := killsLeft + brokerRestarts + storeRestarts
	done := 0
	var lastFault time.Time
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastSettled, progressAt, stallReported, lastRescan := -1, time.Now(), time.Time{}, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		settled := h.settled(ctx, ledger)
		if h.o.Progress {
			fmt.Fprintf(h.o.Stderr, "\r\033[Ksettled %d/%d events, %d kills, %d restarts", settled, len(h.plan.IDs), h.kills, h.restarts)
		}
		all := settled == len(h.plan.IDs)
		due := done < faults && settled > 0 && settled*(faults+1) >= (done+1)*len(h.plan.IDs) &&
			time.Since(lastFault) >= 300*time.Millisecond
		if settled != lastSettled {
			lastSettled, progressAt = settled, time.Now()
		} else if !all && time.Since(progressAt) > stallAfter && time.Since(stallReported) > stallAfter {
			stallReported = time.Now()
			h.reportStall(ctx, ledger, children, settled, time.Since(progressAt))
		}
		if !all && due {
			done++
			switch {
			case killsLeft > 0 && (brokerRestarts+storeRestarts == 0 || rnd.IntN(2) == 0):
				i := rnd.IntN(len(children))
				children[i] = h.kill(children[i], i)
				killsLeft--
			case brokerRestarts > 0:
				fmt.Fprintf(h.o.Stderr, "idempo verify: restarting the broker with %d/%d events settled\n", settled, len(h.plan.IDs))
				h.restart("broker", h.o.BrokerRestartCmd)
				brokerRestarts--
			case storeRestarts > 0:
				if h.own != nil {
					if err := h.own.restart(); err != nil {
						fmt.Fprintf(h.o.Stderr, "idempo verify: restarting the private redis-server failed: %v\n", err)
					} else {
						h.mu.Lock()
						h.restarts++
						h.mu.Unlock()
					}
				} else {
					fmt.Fprintf(h.o.Stderr, "idempo verify: restarting the store with %d/%d events settled\n", settled, len(h.plan.IDs))
					h.restart("store", h.o.StoreRestartCmd)
				}
				storeRestarts--
			}
			lastFault = time.Now()
		}
		h.mu.Lock()
		quiet := time.Since(h.lastReport) > time.Second
		h.mu.Unlock()
		if !all && quiet && time.Since(progressAt) > dlqRescanAfter && time.Since(lastRescan) > dlqRescanAfter {
			lastRescan = time.Now()
			h.rescanDLQ(ctx)
		}
		if all && quiet {
			if h.o.Progress {
				fmt.Fprint(h.o.Stderr, "\r\033[K")
			}
			return false
		}
	}
}

// dlqRescanAfter is how long a quiet run waits before it reads the whole
// DLQ again (see rescanDLQ).
const dlqRescanAfter = 3 * time.Second

// rescanDLQ reads every entry of a RabbitMQ DLQ stream and counts its event
// as dead-lettered. The DLQ reader subscribes to the stream at its end, so
// after a broker restart it misses the dead letters written while it was
// reconnecting; they are in the stream, and this finds them. (A Kafka DLQ
// reader is a consumer group and resumes from its committed offsets.)
func (h *harness) rescanDLQ(ctx context.Context) {
	if h.broker.Spec.Kind != backend.AMQP {
		return
	}
	cfg, err := amqp.ParseURL(h.broker.URL)
	if err != nil {
		return
	}
	src, err := amqpdlq.NewSource(cfg.URL, nil)
	if err != nil {
		fmt.Fprintf(h.o.Stderr, "idempo verify: reading the DLQ: %v\n", err)
		return
	}
	defer func() { _ = src.Close() }()
	var found []string
	err = src.Read(ctx, dlqTopicName(h.o.RunID), func(e dlqops.Entry) error {
		id := e.EventID
		if id == "" {
			id = e.OriginalUUID
		}
		found = append(found, id)
		return nil
	})
	if err != nil {
		fmt.Fprintf(h.o.Stderr, "idempo verify: reading the DLQ: %v\n", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	missed := 0
	for _, id := range found {
		if !h.dead[id] {
			missed++
			h.dead[id] = true
		}
	}
	if missed > 0 {
		fmt.Fprintf(h.o.Stderr, "idempo verify: %d dead letters in the DLQ that its reader missed while it reconnected\n", missed)
	}
}

// stallAfter is how long verify waits without progress before it reports
// what is still unsettled.
const stallAfter = 20 * time.Second

// reportStall prints what verify is waiting for when the run stops making
// progress: the handlers in flight per consumer and some unsettled events.
func (h *harness) reportStall(ctx context.Context, ledger *sql.DB, children []*child, settled int, since time.Duration) {
	counts, err := effectCounts(ctx, ledger, h.o.RunID)
	if err != nil {
		fmt.Fprintf(h.o.Stderr, "idempo verify: no progress for %s (%d/%d settled); reading the ledger failed: %v\n", since.Round(time.Second), settled, len(h.plan.IDs), err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var unsettled []string
	for _, id := range h.plan.IDs {
		if counts[id] == 0 && !h.dead[id] {
			unsettled = append(unsettled, id)
		}
	}
	var inflight []string
	for i, c := range children {
		inflight = append(inflight, fmt.Sprintf("consumer %d: %d", i, len(c.inflight)))
	}
	sample := unsettled[:min(len(unsettled), 5)]
	fmt.Fprintf(h.o.Stderr, "idempo verify: no progress for %s: %d/%d settled, %d deliveries reported; in flight: %s; unsettled (%d) include %s\n",
		since.Round(time.Second), settled, len(h.plan.IDs), h.outcomes, strings.Join(inflight, ", "), len(unsettled), strings.Join(sample, " "))
}

func (h *harness) settled(ctx context.Context, ledger *sql.DB) int {
	var effected int
	_ = ledger.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(DISTINCT event_id) FROM %s", effectsTable(h.o.RunID))).Scan(&effected)
	h.mu.Lock()
	defer h.mu.Unlock()
	return effected + len(h.dead)
}

func (h *harness) restart(what, cmdline string) {
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Stdout, cmd.Stderr = h.o.Stderr, h.o.Stderr
	if err := cmd.Run(); err != nil {
		h.o.Logger.Warn("verify: restart command failed", "what", what, "error", err)
		fmt.Fprintf(h.o.Stderr, "idempo verify: %s restart command failed: %v\n", what, err)
		return
	}
	h.mu.Lock()
	h.restarts++
	h.mu.Unlock()
}

func (h *harness) start(i int) (*child, error) {
	co := ConsumerOptions{
		Broker: h.broker.URL, Store: h.storeURL, RunID: h.o.RunID, Events: h.o.Events, Faults: h.o.Faults,
		Ledger: h.ledgerPath, Inbox: h.inbox, Index: i, Lease: h.o.Lease, Break: h.o.Break, Debug: h.o.Debug,
		Ordering: h.o.Ordering,
	}
	cmd := childCommand(h.o.Command, "verify-consumer", consumerArgs(co), co.Broker, co.Store)
	cmd.Stderr = h.o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start consumer %d: %w", i, err)
	}
	c := &child{cmd: cmd, reported: make(chan struct{}), inflight: map[string]bool{}}
	go func() {
		defer close(c.reported)
		readReport(out, func(kind byte, id string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.lastReport = time.Now()
			switch kind {
			case 'B':
				c.inflight[id] = true
			case 'R':
				h.retries++
				h.observe(middleware.Event{Kind: middleware.KindRetry, Handler: "verify-consumer", Topic: topicName(h.o.RunID)})
			case 'O':
				outcome, event, _ := strings.Cut(id, " ")
				h.outcomes++
				h.byOutcome[middleware.Outcome(outcome)]++
				delete(c.inflight, event)
				h.observe(middleware.Event{Kind: middleware.KindOutcome, Handler: "verify-consumer", Topic: topicName(h.o.RunID), Outcome: middleware.Outcome(outcome)})
			}
		})
	}()
	return c, nil
}

// kill kills a consumer with SIGKILL, counts the handlers it had in flight
// (their effect may repeat without the inbox) and starts a new one.
func (h *harness) kill(c *child, i int) *child {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.reported // the pipe holds every line written before the kill
	_ = c.cmd.Wait()
	h.mu.Lock()
	h.kills++
	h.maxAllowed += len(c.inflight)
	inflight := len(c.inflight)
	h.mu.Unlock()
	if h.o.Debug {
		fmt.Fprintf(h.o.Stderr, "idempo verify: killed consumer %d (pid %d) with %d handlers in flight; restarting it\n", i, c.cmd.Process.Pid, inflight)
	}
	nc, err := h.start(i)
	if err != nil {
		h.o.Logger.Error("verify: restarting a consumer failed", "error", err)
		fmt.Fprintf(h.o.Stderr, "idempo verify: restarting consumer %d failed: %v\n", i, err)
		return c
	}
	return nc
}

func (h *harness) stop(c *child) {
	if c == nil || c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	<-c.reported
}
