package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/cmd/idempo/internal/verify"
)

// verifyCommand is idempo verify.
type verifyCommand struct {
	jsonFlag
	o                              verify.Options
	noInbox                        bool
	events, consumers, kills, rest int
}

func (*verifyCommand) usage() (string, string, string) {
	return "verify", "idempo verify [flags]", `Publishes --events with the demo's fault mix to a real broker, runs
--consumers consumer processes of the idempo stack, kills them at random
moments (--kills) and restarts them, optionally restarts the broker or the
store, and records every effect in a ledger table. A SQL store runs the
transactional inbox by default (--no-inbox for the plain mode).

Verdict (exit status 0 only when it holds, 1 otherwise): lost = 0; every
poison event in the DLQ; double_effects = 0 with the inbox, and otherwise at
most max_allowed_double_effects, the handlers in flight in killed processes;
order_violations = 0 where the broker keeps order per key (Kafka with
--ordering partition or key).
Exit status 2 for usage and setup errors, 130 when interrupted (no verdict).`
}

func (c *verifyCommand) flags(fs *flag.FlagSet) {
	o := &c.o
	faultFlags(fs, &o.Faults)
	fs.IntVar(&c.events, "events", 2000, "number of unique events to publish (duplicates come on top)")
	fs.IntVar(&c.consumers, "consumers", 3, "consumer processes (real child processes)")
	fs.IntVar(&c.kills, "kills", 3, "times a random consumer is killed with SIGKILL and restarted (0 for none)")
	fs.StringVar(&o.Broker, "broker", "kafka", "broker URL: kafka (embedded, on a loopback port), kafka://host:port[,host:port], amqp://user:pass@host:5672/, nats://host:4222")
	fs.StringVar(&o.Store, "store", "sqlite", "dedup store URL: sqlite (a file), sqlite://PATH, redis://host:6379/0, postgres://…, mysql://…")
	orderingFlag(fs, &o.Ordering)
	fs.BoolVar(&c.noInbox, "no-inbox", false, "with a SQL store, use the plain mode instead of the transactional inbox")
	fs.StringVar(&o.BrokerRestartCmd, "broker-restart-cmd", "", "shell command that restarts the broker, run at a random moment")
	fs.StringVar(&o.StoreRestartCmd, "store-restart-cmd", "", "shell command that restarts the store, run at a random moment")
	fs.IntVar(&c.rest, "restarts", 1, "how many times each restart command (or the private Redis) restarts")
	fs.BoolVar(&o.OwnRedis, "own-redis", false, "start a private redis-server (append-only, fsync always) on a spare port as the store, and restart it --restarts times")
	fs.DurationVar(&o.Lease, "lease", 2*time.Second, "the consumers' lease (short, so takeovers after kills are quick)")
	c.registerJSON(fs, "print exactly one JSON object with the result on stdout")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long")
	fs.StringVar(&o.Break, "break", "", "")
	fs.BoolVar(&o.Outbox, "outbox", false, "run the producer half too: producer processes write business rows and their events in one transaction (10% rolled back), relay processes publish the outbox, consumers apply the effect in the SQL inbox and chain a follow-up through the outbox; producers, relays and consumers are killed in turn (--kills); adds phantom_effects to the verdict (needs a SQL --store)")
	fs.IntVar(&o.Producers, "producers", 2, "producer processes (with --outbox)")
	fs.IntVar(&o.Relays, "relays", 2, "relay processes (with --outbox)")
	fs.BoolVar(&o.Debug, "debug", false, "let the consumers log their broker client's connection and rebalance events to stderr")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", "", "serve the consumers' outcomes as Prometheus metrics on /metrics at this address while running")
}

func (c *verifyCommand) Validate() error {
	switch {
	case c.events <= 0:
		return fmt.Errorf("--events must be > 0, got %d", c.events)
	case c.consumers <= 0:
		return fmt.Errorf("--consumers must be > 0, got %d", c.consumers)
	case c.kills < 0:
		return fmt.Errorf("--kills must be >= 0, got %d", c.kills)
	case c.o.Producers <= 0:
		return fmt.Errorf("--producers must be > 0, got %d", c.o.Producers)
	case c.o.Relays <= 0:
		return fmt.Errorf("--relays must be > 0, got %d", c.o.Relays)
	}
	if c.o.Outbox {
		if c.noInbox {
			return errors.New("--outbox runs the transactional inbox: it cannot be combined with --no-inbox")
		}
		spec, err := backend.ParseStore(c.o.Store)
		if err != nil {
			return err
		}
		if k := spec.Kind; k != backend.SQLite && k != backend.Postgres && k != backend.MySQL {
			return demo.ErrOutboxStore
		}
	}
	if _, err := backend.ParseOrdering(c.o.Ordering); err != nil {
		return err
	}
	if err := checkKafkaOnly(c.o.Broker, c.o.Ordering, 0); err != nil {
		return err
	}
	o := &c.o
	o.Events, o.Consumers, o.Kills, o.Restarts, o.StoreRestarts = c.events, c.consumers, c.kills, c.rest, c.rest
	if c.kills == 0 {
		o.Kills = -1
	}
	if c.noInbox {
		f := false
		o.Inbox = &f
	}
	return nil
}

func (c *verifyCommand) Run(ctx context.Context, e *env) (result, error) {
	c.o.Stderr, c.o.Progress = e.stderr, isTerminal(e.stderr)
	res, err := verify.Run(ctx, c.o)
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted("while setting up, so nothing is judged")
		}
		return nil, err
	}
	return verdict(verifyText(res, dlqNote(c.o.Broker, true)), res.Verdict())
}

// verifyText is the result of verify: every field of its JSON form.
func verifyText(res verify.Result, dlqNote string) *ledgerText {
	t := &ledgerText{
		title: "idempo verify ledger", ledger: res.Ledger, json: res, dlqNote: dlqNote,
		more: []ledgerRow{
			{"kills", res.Kills, "consumers killed with SIGKILL and restarted"},
			{"restarts", res.Restarts, "broker and store restarts"},
			{"max_allowed_double_effects", res.MaxAllowedDoubleEffects, "handlers in flight in killed consumers"},
			{"inbox", res.Inbox, "effects recorded in the transactional inbox"},
			{"guarantee_level", res.GuaranteeLevel, ""},
		},
	}
	if res.Outbox {
		t.more = append(t.more,
			ledgerRow{"outbox", res.Outbox, "producers, relays and consumers all ran as processes"},
			ledgerRow{"kills_by_role", fmt.Sprintf("producer %d, relay %d, consumer %d", res.KillsByRole[verify.RoleProducer], res.KillsByRole[verify.RoleRelay], res.KillsByRole[verify.RoleConsumer]), ""},
			ledgerRow{"crashes", res.Crashes, "processes that exited on their own and were started again"})
	}
	return t
}

// verifyOutboxChild is a producer, relay or consumer process of verify
// --outbox; not for direct use.
type verifyOutboxChild struct {
	o verify.OutboxChildOptions
}

func (*verifyOutboxChild) usage() (string, string, string) {
	return "verify-outbox-child", "idempo verify-outbox-child [flags]", "A producer, relay or consumer process of idempo verify --outbox; not for direct use."
}

func (c *verifyOutboxChild) flags(fs *flag.FlagSet) {
	o := &c.o
	fs.StringVar(&o.Role, "role", "", "producer, relay or consumer")
	fs.StringVar(&o.Broker, "broker", "", "broker URL (default: $"+verify.EnvChildBroker+")")
	fs.StringVar(&o.Store, "store", "", "store URL (default: $"+verify.EnvChildStore+")")
	fs.StringVar(&o.RunID, "run", "", "run ID")
	fs.StringVar(&o.Ordering, "ordering", "partition", "Kafka ordering: partition, key or unordered")
	fs.IntVar(&o.Events, "events", 0, "number of events")
	fs.IntVar(&o.Index, "index", 0, "this process's number among its kind")
	fs.IntVar(&o.Producers, "producers", 1, "producers sharing the events")
	fs.DurationVar(&o.Lease, "lease", 2*time.Second, "the stack's and the relay's lease")
	fs.StringVar(&o.Break, "break", "", "deliberately broken mode (tests)")
}

func (c *verifyOutboxChild) Validate() error {
	switch c.o.Role {
	case verify.RoleProducer, verify.RoleRelay, verify.RoleConsumer:
		return nil
	}
	return fmt.Errorf("--role %q: want producer, relay or consumer", c.o.Role)
}

func (c *verifyOutboxChild) Run(ctx context.Context, e *env) (result, error) {
	c.o.Broker, c.o.Store = verify.ChildURLs(c.o.Broker, c.o.Store)
	c.o.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if err := verify.RunOutboxChild(ctx, c.o); err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%s %d: %w", c.o.Role, c.o.Index, err)
	}
	return nil, nil
}

// verifyConsumer is the consumer process verify starts; not for direct use.
type verifyConsumer struct {
	o verify.ConsumerOptions
}

func (*verifyConsumer) usage() (string, string, string) {
	return "verify-consumer", "idempo verify-consumer [flags]", "A consumer process of idempo verify; not for direct use."
}

func (c *verifyConsumer) flags(fs *flag.FlagSet) {
	o := &c.o
	faultFlags(fs, &o.Faults)
	fs.StringVar(&o.Broker, "broker", "", "broker URL (default: $"+verify.EnvChildBroker+")")
	fs.StringVar(&o.Store, "store", "", "store URL (default: $"+verify.EnvChildStore+")")
	fs.StringVar(&o.RunID, "run", "", "run ID")
	fs.IntVar(&o.Events, "events", 0, "number of unique events")
	fs.StringVar(&o.Ledger, "ledger", "", "SQLite ledger file (plain mode)")
	fs.BoolVar(&o.Inbox, "inbox", false, "record effects in the inbox transaction")
	fs.IntVar(&o.Index, "index", 0, "consumer index")
	fs.DurationVar(&o.Lease, "lease", 2*time.Second, "lease")
	fs.StringVar(&o.Break, "break", "", "deliberately broken mode (tests)")
	fs.BoolVar(&o.Debug, "debug", false, "log the broker client's connection and rebalance events")
	fs.StringVar(&o.Ordering, "ordering", "partition", "Kafka ordering: partition, key or unordered")
}

func (c *verifyConsumer) Validate() error { return nil }

func (c *verifyConsumer) Run(ctx context.Context, e *env) (result, error) {
	o := c.o
	o.Broker, o.Store = verify.ChildURLs(o.Broker, o.Store)
	o.Report = os.Stdout
	level := slog.LevelError
	if o.Debug {
		level = slog.LevelInfo
	}
	o.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	if err := verify.RunConsumer(ctx, o); err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("consumer %d: %w", o.Index, err)
	}
	return nil, nil
}
