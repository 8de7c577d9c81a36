// Command idempo demonstrates, verifies and operates idempo's idempotent
// consumer stack.
//
//	idempo demo     run the whole stack with injected faults (no servers needed)
//	idempo help     show this help
//
// Every command answers --help.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
)

// printMainHelp prints the help of idempo itself.
func printMainHelp(w io.Writer) {
	printGroupHelp(w, "idempo <command> [flags]", "idempo — effectively-once event consumers on Watermill.", [][2]string{
		{"demo", "publish events with injected faults through the full stack and\ncheck that every effect happened once and nothing was lost"},
		{"verify", "the same fault mix against real brokers and stores, with consumer\nprocesses killed and restarted, judged per guarantee level"},
		{"dlq", "list, show, replay and purge dead letters"},
		{"bench", "measure what the stack costs on a broker and store"},
		{"help", "show this help"},
	}, "Run 'idempo <command> --help' for a command's flags.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C stops the command cleanly; a second one kills it.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitInterrupted is the exit status of a command stopped by Ctrl-C or
// SIGTERM: 128 + SIGINT, as a shell reports a process the signal killed.
const exitInterrupted = 130

// interrupted reports a command stopped by a signal and returns its exit
// status. what says how far it got; it must not judge the unfinished run.
func interrupted(stderr io.Writer, cmd, what string) int {
	fmt.Fprintf(stderr, "idempo %s: interrupted: %s\n", cmd, what)
	return exitInterrupted
}

// run executes the CLI and returns the exit status: 0 success, 1 a verdict
// that does not hold, 2 a usage or setup error, 130 interrupted (Ctrl-C or
// SIGTERM; no verdict).
//
// Everything it prints goes through one redactor: the credentials of every
// URL or DSN on the command line are replaced by "xxxxx", in the CLI's own
// lines and in the error texts of drivers alike.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	red := backend.NewRedactor(args...)
	stdout, stderr = red.Writer(stdout), red.Writer(stderr)
	if len(args) == 0 {
		printMainHelp(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		printMainHelp(stdout)
		return 0
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "verify-consumer":
		return runVerifyConsumer(ctx, args[1:], stderr)
	case "dlq":
		return runDLQ(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "idempo: unknown command %q\n\n", args[0])
		printMainHelp(stderr)
		return 2
	}
}

func isTerminal(w io.Writer) bool {
	for {
		u, ok := w.(interface{ Unwrap() io.Writer })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "idempo demo [flags]", `Publishes --events unique events through idempo's full stack (dedup, retries,
dead-letter queue, ack after success) with injected faults, then checks the
ledger. Exit status 0 only when lost = 0, double_effects = 0, dead_lettered =
expected_dead_lettered and effects + dead_lettered = unique_events; 1 when
that does not hold; 2 for usage and setup errors; 130 when interrupted (no
verdict). The run's topic, DLQ and dedup records are deleted at the end
unless --keep.`, stderr)
	d := faultFlags(fs)
	events := fs.Int("events", 20000, "number of unique events to publish (duplicates come on top)")
	consumers := fs.Int("consumers", 3, "consumers sharing one dedup scope (on gochannel each sees every message: concurrent twins)")
	inFlight := fs.Int("in-flight", 32, "messages each consumer handles at once")
	broker := fs.String("broker", "gochannel", "broker URL: gochannel, kafka (embedded), kafka://host:port[,host:port], amqp://user:pass@host:5672/")
	store := fs.String("store", "sqlite", "dedup store URL: sqlite (a file in the user cache dir, the embedded default), sqlite://PATH, memory, redis://host:6379/0, postgres://…, mysql://…")
	asJSON := fs.Bool("json", false, "print exactly one JSON object with the ledger on stdout")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	verbose := fs.Bool("verbose", false, "log the stack's warnings (dead letters, lost leases) to stderr")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics on /metrics at this address while running (e.g. :9090)")
	keep := fs.Bool("keep", false, "keep what the run created on shared servers (topic, DLQ, dedup records); by default it is deleted at the end")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	if *events <= 0 {
		fmt.Fprintf(stderr, "idempo demo: --events must be > 0, got %d\n", *events)
		return 2
	}
	if *inFlight <= 0 {
		fmt.Fprintf(stderr, "idempo demo: --in-flight must be >= 1, got %d\n", *inFlight)
		return 2
	}
	if *consumers <= 0 {
		fmt.Fprintf(stderr, "idempo demo: --consumers must be >= 1, got %d\n", *consumers)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ledger, err := demo.Run(ctx, demo.Options{
		Events:      *events,
		Faults:      *d,
		Consumers:   *consumers,
		InFlight:    *inFlight,
		Broker:      *broker,
		Store:       *store,
		Timeout:     *timeout,
		Stderr:      stderr,
		Progress:    isTerminal(stderr),
		Logger:      logger,
		MetricsAddr: *metricsAddr,
		Keep:        *keep,
	})
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(stderr, "demo", "while setting up, so nothing is judged")
		}
		fmt.Fprintf(stderr, "idempo demo: %v\n", err)
		return 2
	}
	verdict := ledger.Verdict()
	if errors.Is(verdict, demo.ErrInterrupted) {
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(ledger)
		}
		fmt.Fprintf(stderr, "idempo demo: %v\n", verdict)
		return exitInterrupted
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(ledger); err != nil {
			fmt.Fprintf(stderr, "idempo demo: %v\n", err)
			return 2
		}
	} else {
		printLedger(stdout, ledger, dlqNote(*broker, *keep))
	}
	if verdict != nil {
		fmt.Fprintf(stderr, "idempo demo: FAILED: %v\n", verdict)
		return 1
	}
	if !*asJSON {
		fmt.Fprintln(stdout, "\nOK: every event's effect happened once or it is in the DLQ; nothing lost.")
	}
	return 0
}

// faultFlags registers the fault-mix flags shared by demo and verify.
func faultFlags(fs *flag.FlagSet) *demo.Faults {
	d := demo.DefaultFaults
	fs.Float64Var(&d.DupRate, "dup-rate", d.DupRate, "share of events the publisher sends twice")
	fs.Float64Var(&d.AckLossRate, "ack-loss-rate", d.AckLossRate, "share of events whose ack is lost after the effect (the message comes again)")
	fs.Float64Var(&d.FailRate, "fail-rate", d.FailRate, "share of events failing transiently (they succeed on retry)")
	fs.Float64Var(&d.PoisonRate, "poison-rate", d.PoisonRate, "share of events failing on every attempt (they must end in the DLQ)")
	fs.Float64Var(&d.PanicRate, "panic-rate", d.PanicRate, "share of events whose handler panics on the first attempt")
	fs.Uint64Var(&d.Seed, "seed", d.Seed, "seed of the fault pattern (the run ID stays fresh)")
	return &d
}

// parseFlags parses args and reports the exit status to return, if any.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, true
	}
	return 0, false
}

// ledgerRow is one line of a text ledger: the JSON field's name, its value
// and what it means.
type ledgerRow struct {
	name string
	v    any
	note string
}

// ledgerRows lists every field of the ledger's JSON form, in that order.
func ledgerRows(l demo.Ledger, dlqNote string) []ledgerRow {
	return []ledgerRow{
		{"run_id", l.RunID, ""},
		{"broker", l.Broker, ""},
		{"store", l.Store, ""},
		{"dlq_topic", l.DLQTopic, dlqNote},
		{"published", l.Published, "messages sent, publisher duplicates included"},
		{"unique_events", l.UniqueEvents, ""},
		{"deliveries", l.Deliveries, "messages handed to the stack by all consumers"},
		{"effects", l.Effects, "events whose effect happened"},
		{"duplicates_skipped", l.DuplicatesSkipped, "acked without running the handler"},
		{"retries", l.Retries, "in-process retries after transient errors and panics"},
		{"dead_lettered", l.DeadLettered, "events in the DLQ"},
		{"expected_dead_lettered", l.ExpectedDeadLettered, "poison events injected"},
		{"lost", l.Lost, "neither effected nor dead-lettered"},
		{"double_effects", l.DoubleEffects, "events whose effect happened more than once"},
		{"ack_loss_redeliveries", l.AckLossRedeliveries, "messages delivered again after an injected lost ack"},
		{"in_progress_nacked", l.InProgressNacked, "deliveries nacked while another consumer held the event"},
		{"panics", l.Panics, "handler panics recovered"},
		{"lease_lost", l.LeaseLost, "completions refused: the lease had passed to another consumer"},
		{"complete_failed", l.CompleteFailed, "completions the store failed to record (acked anyway)"},
		{"dlq_publish_failed", l.DLQPublishFailed, "dead-letter publishes that failed (the message was nacked)"},
		{"unsettled", l.Unsettled, "neither effected nor dead-lettered when the run ended"},
		{"timed_out", l.TimedOut, "the run hit --timeout"},
		{"interrupted", l.Interrupted, "the run was stopped (Ctrl-C): no verdict"},
		{"elapsed_ms", l.ElapsedMS, ""},
	}
}

func printRows(w io.Writer, rows []ledgerRow) {
	for _, r := range rows {
		if s, ok := r.v.(string); ok {
			line := fmt.Sprintf("  %-24s %s", r.name, s)
			if r.note != "" {
				line += "  (" + r.note + ")"
			}
			fmt.Fprintln(w, line)
			continue
		}
		fmt.Fprintf(w, "  %-24s %10v  %s\n", r.name, r.v, r.note)
	}
}

// dlqNote says what becomes of the run's DLQ.
func dlqNote(brokerURL string, keep bool) string {
	spec, err := backend.ParseBroker(brokerURL)
	switch {
	case err == nil && spec.Embedded:
		return "in-process: gone when the run ends"
	case keep:
		return "kept; give it to idempo dlq list --topic"
	default:
		return "deleted at the end; --keep keeps it"
	}
}

func printLedger(w io.Writer, l demo.Ledger, dlqNote string) {
	fmt.Fprintln(w, "idempo demo ledger")
	printRows(w, ledgerRows(l, dlqNote))
}
