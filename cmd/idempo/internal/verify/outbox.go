package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/outbox"
	"github.com/idempo/idempo/retry"
)

// The kinds of process of an outbox run.
const (
	RoleProducer = "producer"
	RoleRelay    = "relay"
	RoleConsumer = "consumer"
)

// outboxTopicPrefix names the topics of an outbox run.
const outboxTopicPrefix = "idempo-verify-ob-"

// OutboxChildOptions configures one process of verify --outbox.
type OutboxChildOptions struct {
	Role          string
	Broker, Store string
	Ordering      string
	RunID         string
	Events        int
	// Index is this process's number among its kind; Producers is how many
	// producers share the events.
	Index, Producers int
	Lease            time.Duration
	// Break is "outside-tx" for producers that write the event after the
	// business transaction (tests).
	Break  string
	Logger *slog.Logger
}

// outboxChildArgs is the command line of a child process (the broker and
// store URLs go in its environment: see [childCommand]).
func outboxChildArgs(o OutboxChildOptions) []string {
	args := []string{
		"--role", o.Role, "--run", o.RunID,
		"--events", strconv.Itoa(o.Events), "--index", strconv.Itoa(o.Index),
		"--producers", strconv.Itoa(o.Producers), "--lease", o.Lease.String(), "--ordering", o.Ordering,
	}
	if o.Break != "" {
		args = append(args, "--break", o.Break)
	}
	return args
}

// RunOutboxChild runs one producer (until its events are written), relay
// or consumer (until ctx ends) of verify --outbox.
func RunOutboxChild(ctx context.Context, o OutboxChildOptions) error {
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
	store, err := backend.OpenStore(ctx, sspec, o.RunID)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() { _ = store.Close() }()
	ss, ok := store.Store.(*sqlstore.Store)
	if !ok {
		return demo.ErrOutboxStore
	}
	// Several processes share the database's connection limit (PostgreSQL:
	// 100 by default): producers and relays need few connections, the
	// consumers one per claim in flight.
	if o.Role == RoleConsumer {
		ss.DB().SetMaxOpenConns(16)
	} else {
		ss.DB().SetMaxOpenConns(4)
	}
	world, err := demo.NewOutboxWorld(ss.DB(), ss.Dialect(), outboxTopicPrefix, o.RunID, o.Events)
	if err != nil {
		return err
	}
	if o.Role == RoleProducer {
		return world.Produce(ctx, o.Index, o.Producers, o.Break == "outside-tx")
	}
	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.WithFastFailover())
	if err != nil {
		return fmt.Errorf("open broker: %w", err)
	}
	defer func() { _ = broker.Close() }()
	switch o.Role {
	case RoleRelay:
		relay, err := outbox.NewRelay(world.Outbox(), outbox.RelayConfig{
			Publisher: broker.Publisher, PollInterval: 10 * time.Millisecond, Lease: o.Lease,
			Name: "verify-relay-" + strconv.Itoa(o.Index),
		})
		if err != nil {
			return err
		}
		return relay.Run(ctx)
	case RoleConsumer:
		if broker.Ordering, err = backend.ParseOrdering(o.Ordering); err != nil {
			return err
		}
		return runOutboxConsumer(ctx, o, world, broker, store)
	default:
		return fmt.Errorf("--role %q: want producer, relay or consumer", o.Role)
	}
}

func runOutboxConsumer(ctx context.Context, o OutboxChildOptions, world *demo.OutboxWorld, broker *backend.Broker, store *backend.Store) error {
	base := middleware.Config{
		Store: store.Store, DLQ: dlq.Config{Publisher: broker.DLQ()},
		Lease: o.Lease, Retention: time.Hour, Logger: o.Logger, NackDelay: 50 * time.Millisecond,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 20 * time.Millisecond, MaxAttempts: 10},
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	for hop, topic := range []string{world.Topic1(), world.Topic2()} {
		stack, err := middleware.New(world.StackConfig(base, hop+1))
		if err != nil {
			return err
		}
		defer func() { _ = stack.Close() }()
		sub, err := broker.NewSubscriber(outboxTopicPrefix+o.RunID+"-hop"+strconv.Itoa(hop+1), o.Index)
		if err != nil {
			return err
		}
		h := stack.Middleware(world.Handler(hop + 1))
		router.AddConsumerHandler("hop"+strconv.Itoa(hop+1), topic, sub, func(m *message.Message) error { _, err := h(m); return err })
	}
	return router.Run(ctx)
}

// outboxProc is one child process of an outbox run.
type outboxProc struct {
	role  string
	index int
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process exited
	err   error         // its exit, once done is closed
}

// outboxHarness drives the processes of an outbox run.
type outboxHarness struct {
	o     Options
	child OutboxChildOptions
	procs map[string][]*outboxProc
	mu    sync.Mutex
	kills map[string]int
	// crashes counts processes that exited on their own and were started
	// again.
	crashes int
	stderr  io.Writer
}

func (h *outboxHarness) start(role string, i int) (*outboxProc, error) {
	co := h.child
	co.Role, co.Index = role, i
	cmd := childCommand(h.o.Command, "verify-outbox-child", outboxChildArgs(co), co.Broker, co.Store)
	cmd.Stderr = h.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %d: %w", role, i, err)
	}
	p := &outboxProc{role: role, index: i, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *outboxProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill kills one running process of role with SIGKILL and starts it again.
func (h *outboxHarness) kill(role string, rnd *rand.Rand) bool {
	var running []int
	for i, p := range h.procs[role] {
		if !p.exited() {
			running = append(running, i)
		}
	}
	if len(running) == 0 {
		return false
	}
	i := running[rnd.IntN(len(running))]
	p := h.procs[role][i]
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	np, err := h.start(role, i)
	if err != nil {
		fmt.Fprintf(h.stderr, "idempo verify: restarting %s %d failed: %v\n", role, i, err)
		return true
	}
	h.procs[role][i] = np
	h.mu.Lock()
	h.kills[role]++
	h.mu.Unlock()
	return true
}

// maxCrashes bounds how often the processes of an outbox run may exit on
// their own (a crash, or a start refused by a busy database) before the
// run gives up.
const maxCrashes = 20

// reviveCrashed starts again every process that exited without being
// killed (a producer that finished its events excepted), and fails the run
// past maxCrashes.
func (h *outboxHarness) reviveCrashed() error {
	for role, ps := range h.procs {
		for i, p := range ps {
			if !p.exited() || (role == RoleProducer && p.err == nil) {
				continue
			}
			h.crashes++
			fmt.Fprintf(h.stderr, "idempo verify: %s %d exited on its own (%v); starting it again\n", role, i, p.err)
			if h.crashes > maxCrashes {
				return fmt.Errorf("%d processes exited on their own; the last, %s %d: %w", h.crashes, role, i, p.err)
			}
			np, err := h.start(role, i)
			if err != nil {
				return err
			}
			ps[i] = np
		}
	}
	return nil
}

// producersDone reports whether every producer finished its events.
func (h *outboxHarness) producersDone() bool {
	for _, p := range h.procs[RoleProducer] {
		if !p.exited() || p.err != nil {
			return false
		}
	}
	return true
}

func (h *outboxHarness) stopAll() {
	for _, ps := range h.procs {
		for _, p := range ps {
			if p.exited() {
				continue
			}
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
	}
}

// ErrOutboxBroker is returned for verify --outbox on GoChannel.
var ErrOutboxBroker = errors.New("verify --outbox needs a broker other processes can reach: --broker kafka (embedded), kafka://… or amqp://…")

// runOutbox is [Run] with Options.Outbox.
func runOutbox(ctx context.Context, o Options, bspec, sspec backend.Spec) (Result, error) {
	if bspec.Kind == backend.GoChannel {
		return Result{}, ErrOutboxBroker
	}
	if k := sspec.Kind; k != backend.SQLite && k != backend.Postgres && k != backend.MySQL {
		return Result{}, demo.ErrOutboxStore
	}
	if len(o.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return Result{}, fmt.Errorf("cannot find this executable to start processes: %w", err)
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
	store, err := backend.OpenStore(ctx, sspec, o.RunID)
	if err != nil {
		return Result{}, fmt.Errorf("open store %s: %w", sspec, err)
	}
	defer func() { _ = store.Close() }()
	if store.Drop != nil {
		defer func() { _ = store.Drop(context.WithoutCancel(ctx)) }()
	}
	ss := store.Store.(*sqlstore.Store)
	world, err := demo.NewOutboxWorld(ss.DB(), ss.Dialect(), outboxTopicPrefix, o.RunID, o.Events)
	if err != nil {
		return Result{}, err
	}
	defer world.Drop(context.WithoutCancel(ctx), o.Stderr)
	if err := world.Create(ctx); err != nil {
		return Result{}, err
	}
	if broker.Prepare != nil {
		for hop, t := range []string{world.Topic1(), world.Topic2()} {
			if err := broker.Prepare(ctx, t, outboxTopicPrefix+o.RunID+"-hop"+strconv.Itoa(hop+1)); err != nil {
				return Result{}, fmt.Errorf("prepare %s: %w", t, err)
			}
		}
	}
	if broker.Delete != nil {
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = broker.Delete(dctx, world.Topic1(), world.Topic2())
		}()
	}
	fmt.Fprintf(o.Stderr, "idempo verify --outbox: broker: %s, store: %s, run %s, %d events, %d producers, %d relays, %d consumers, %d kills\n",
		broker.Display, store.Display, o.RunID, o.Events, o.Producers, o.Relays, o.Consumers, max(o.Kills, 0))
	h := &outboxHarness{
		o: o, stderr: o.Stderr, procs: map[string][]*outboxProc{}, kills: map[string]int{},
		child: OutboxChildOptions{
			Broker: broker.URL, Store: store.URL, Ordering: o.Ordering, RunID: o.RunID, Events: o.Events,
			Producers: o.Producers, Lease: o.Lease, Break: o.Break,
		},
	}
	defer h.stopAll()
	start := time.Now()
	for _, k := range []struct {
		role string
		n    int
	}{{RoleConsumer, o.Consumers}, {RoleRelay, o.Relays}, {RoleProducer, o.Producers}} {
		for i := range k.n {
			p, err := h.start(k.role, i)
			if err != nil {
				return Result{}, err
			}
			h.procs[k.role] = append(h.procs[k.role], p)
		}
	}
	timedOut, err := h.drive(ctx, world)
	if err != nil {
		return Result{}, err
	}
	h.stopAll()
	l, err := world.Ledger(context.WithoutCancel(ctx), broker.KeepsOrder())
	if err != nil {
		return Result{}, err
	}
	l.TimedOut, l.ElapsedMS = timedOut, time.Since(start).Milliseconds()
	l.RunID, l.Broker, l.Store = o.RunID, broker.Display, store.Display
	if parent.Err() != nil {
		l.Interrupted, l.TimedOut, l.Lost = true, false, 0
	}
	r := Result{
		Ledger: l, Inbox: true, Outbox: true, Crashes: h.crashes,
		Kills:          h.kills[RoleProducer] + h.kills[RoleRelay] + h.kills[RoleConsumer],
		KillsByRole:    map[string]int{RoleProducer: h.kills[RoleProducer], RoleRelay: h.kills[RoleRelay], RoleConsumer: h.kills[RoleConsumer]},
		GuaranteeLevel: "outbox + sql-inbox: exactly one effect per committed change at each hop, none for a rolled-back one",
	}
	return r, nil
}

// drive kills processes and waits until the run is settled; it returns
// true on timeout. A third of the kills hit producers, spread over the
// writing by the committed rows; the rest alternate between relays and
// consumers, spread over the second hop's effects, so each kind dies
// while it works.
func (h *outboxHarness) drive(ctx context.Context, world *demo.OutboxWorld) (bool, error) {
	rnd := rand.New(rand.NewPCG(h.o.Faults.Seed, 0x0b0c))
	kills := max(h.o.Kills, 0)
	pKills := kills / 3
	oKills := kills - pKills
	pDone, oDone := 0, 0
	var lastKill time.Time
	var failed error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// About 90% of the events commit.
	expected := h.o.Events * 9 / 10
	timedOut := world.Wait(ctx, func() bool {
		if err := h.reviveCrashed(); err != nil && failed == nil {
			failed = err
			cancel()
		}
		return h.producersDone()
	}, func(n [2]int) {
		committed := world.CommittedCount(ctx)
		if h.o.Progress {
			fmt.Fprintf(h.o.Stderr, "\r\033[Kcommitted %d, first hop %d, second hop %d of about %d, %d kills", committed, n[0], n[1], expected, pDone+oDone)
		}
		if time.Since(lastKill) < 300*time.Millisecond {
			return
		}
		switch {
		case pDone < pKills && committed*(pKills+1) >= (pDone+1)*expected:
			h.kill(RoleProducer, rnd)
			pDone++
			lastKill = time.Now()
		case oDone < oKills && n[0] > 0 && n[1]*(oKills+1) >= (oDone+1)*expected:
			role := RoleRelay
			if oDone%2 == 1 {
				role = RoleConsumer
			}
			h.kill(role, rnd)
			oDone++
			lastKill = time.Now()
		}
	})
	if h.o.Progress {
		fmt.Fprint(h.o.Stderr, "\r\033[K")
	}
	if failed != nil {
		return false, failed
	}
	return timedOut, nil
}
