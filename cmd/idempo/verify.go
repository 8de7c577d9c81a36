package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/cmd/idempo/internal/verify"
)

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verify", "idempo verify [flags]", `Publishes --events with the demo's fault mix to a real broker, runs
--consumers consumer processes of the idempo stack, kills them at random
moments (--kills) and restarts them, optionally restarts the broker or the
store, and records every effect in a ledger table. A SQL store runs the
transactional inbox by default (--no-inbox for the plain mode).

Verdict (exit status 0 only when it holds, 1 otherwise): lost = 0; every
poison event in the DLQ; double_effects = 0 with the inbox, and otherwise at
most max_allowed_double_effects, the handlers in flight in killed processes.
Exit status 2 for usage and setup errors, 130 when interrupted (no verdict).`, stderr)
	d := faultFlags(fs)
	events := fs.Int("events", 2000, "number of unique events to publish (duplicates come on top)")
	consumers := fs.Int("consumers", 3, "consumer processes (real child processes)")
	kills := fs.Int("kills", 3, "times a random consumer is killed with SIGKILL and restarted (0 for none)")
	broker := fs.String("broker", "kafka", "broker URL: kafka (embedded, on a loopback port), kafka://host:port[,host:port], amqp://user:pass@host:5672/")
	store := fs.String("store", "sqlite", "dedup store URL: sqlite (a file), sqlite://PATH, redis://host:6379/0, postgres://…, mysql://…")
	noInbox := fs.Bool("no-inbox", false, "with a SQL store, use the plain mode instead of the transactional inbox")
	brokerRestart := fs.String("broker-restart-cmd", "", "shell command that restarts the broker, run at a random moment")
	storeRestart := fs.String("store-restart-cmd", "", "shell command that restarts the store, run at a random moment")
	restarts := fs.Int("restarts", 1, "how many times each restart command (or the private Redis) restarts")
	ownRedis := fs.Bool("own-redis", false, "start a private redis-server (append-only, fsync always) on a spare port as the store, and restart it --restarts times")
	lease := fs.Duration("lease", 2*time.Second, "the consumers' lease (short, so takeovers after kills are quick)")
	asJSON := fs.Bool("json", false, "print exactly one JSON object with the result on stdout")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	brk := fs.String("break", "", "")
	debug := fs.Bool("debug", false, "let the consumers log their broker client's connection and rebalance events to stderr")
	metricsAddr := fs.String("metrics-addr", "", "serve the consumers' outcomes as Prometheus metrics on /metrics at this address while running")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	if *events <= 0 || *consumers <= 0 || *kills < 0 {
		fmt.Fprintln(stderr, "idempo verify: --events and --consumers must be > 0, --kills >= 0")
		return 2
	}
	opts := verify.Options{
		Broker: *broker, Store: *store, Events: *events, Faults: *d, Consumers: *consumers, Kills: *kills,
		BrokerRestartCmd: *brokerRestart, StoreRestartCmd: *storeRestart, Restarts: *restarts,
		Lease: *lease, Timeout: *timeout, Stderr: stderr, Progress: isTerminal(stderr), Break: *brk,
		OwnRedis: *ownRedis, StoreRestarts: *restarts, MetricsAddr: *metricsAddr, Debug: *debug,
	}
	if *kills == 0 {
		opts.Kills = -1
	}
	if *noInbox {
		f := false
		opts.Inbox = &f
	}
	res, err := verify.Run(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(stderr, "verify", "while setting up, so nothing is judged")
		}
		fmt.Fprintf(stderr, "idempo verify: %v\n", err)
		return 2
	}
	verdict := res.Verdict()
	if errors.Is(verdict, demo.ErrInterrupted) {
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(res)
		}
		fmt.Fprintf(stderr, "idempo verify: %v\n", verdict)
		return exitInterrupted
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return 2
		}
	} else {
		printVerifyResult(stdout, res, dlqNote(*broker, true))
	}
	if verdict != nil {
		fmt.Fprintf(stderr, "idempo verify: FAILED: %v\n", verdict)
		return 1
	}
	return 0
}

// runVerifyConsumer is the consumer process verify starts; not for direct use.
func runVerifyConsumer(ctx context.Context, args []string, stderr io.Writer) int {
	fs := newFlagSet("verify-consumer", "idempo verify-consumer [flags]", "A consumer process of idempo verify; not for direct use.", stderr)
	d := faultFlags(fs)
	var o verify.ConsumerOptions
	fs.StringVar(&o.Broker, "broker", "", "broker URL")
	fs.StringVar(&o.Store, "store", "", "store URL")
	fs.StringVar(&o.RunID, "run", "", "run ID")
	fs.IntVar(&o.Events, "events", 0, "number of unique events")
	fs.StringVar(&o.Ledger, "ledger", "", "SQLite ledger file (plain mode)")
	fs.BoolVar(&o.Inbox, "inbox", false, "record effects in the inbox transaction")
	fs.IntVar(&o.Index, "index", 0, "consumer index")
	fs.DurationVar(&o.Lease, "lease", 2*time.Second, "lease")
	fs.StringVar(&o.Break, "break", "", "deliberately broken mode (tests)")
	fs.BoolVar(&o.Debug, "debug", false, "log the broker client's connection and rebalance events")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	o.Faults = *d
	o.Report = os.Stdout
	level := slog.LevelError
	if o.Debug {
		level = slog.LevelInfo
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := verify.RunConsumer(ctx, o); err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "idempo verify-consumer %d: %v\n", o.Index, err)
		return 2
	}
	return 0
}

// printVerifyResult prints every field of the result's JSON form.
func printVerifyResult(w io.Writer, res verify.Result, dlqNote string) {
	fmt.Fprintln(w, "idempo verify ledger")
	printRows(w, append(ledgerRows(res.Ledger, dlqNote),
		ledgerRow{"kills", res.Kills, "consumers killed with SIGKILL and restarted"},
		ledgerRow{"restarts", res.Restarts, "broker and store restarts"},
		ledgerRow{"max_allowed_double_effects", res.MaxAllowedDoubleEffects, "handlers in flight in killed consumers"},
		ledgerRow{"inbox", res.Inbox, "effects recorded in the transactional inbox"},
		ledgerRow{"guarantee_level", res.GuaranteeLevel, ""},
	))
}
