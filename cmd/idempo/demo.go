package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
)

// demoCommand is idempo demo.
type demoCommand struct {
	jsonFlag
	faults                      demo.Faults
	events, consumers, inFlight int
	broker, store, metricsAddr  string
	ordering                    string
	timeout                     time.Duration
	verbose, keep               bool
	outbox                      bool
	relays                      int
}

func (*demoCommand) usage() (string, string, string) {
	return "demo", "idempo demo [flags]", `Publishes --events unique events through idempo's full stack (dedup, retries,
dead-letter queue, ack after success) with injected faults, then checks the
ledger. Exit status 0 only when lost = 0, double_effects = 0, dead_lettered =
expected_dead_lettered and effects + dead_lettered = unique_events; 1 when
that does not hold; 2 for usage and setup errors; 130 when interrupted (no
verdict). The run's topic, DLQ and dedup records are deleted at the end
unless --keep.`
}

func (o *demoCommand) flags(fs *flag.FlagSet) {
	faultFlags(fs, &o.faults)
	fs.IntVar(&o.events, "events", 20000, "number of unique events to publish (duplicates come on top)")
	fs.IntVar(&o.consumers, "consumers", 3, "consumers sharing one dedup scope (on gochannel each sees every message: concurrent twins)")
	fs.IntVar(&o.inFlight, "in-flight", 32, "messages each consumer handles at once")
	fs.StringVar(&o.broker, "broker", "gochannel", "broker URL: gochannel, kafka (embedded), kafka://host:port[,host:port], amqp://user:pass@host:5672/, nats://host:4222")
	orderingFlag(fs, &o.ordering)
	fs.StringVar(&o.store, "store", "sqlite", "dedup store URL: sqlite (a file in the user cache dir, the embedded default), sqlite://PATH, memory, redis://host:6379/0, postgres://…, mysql://…")
	o.registerJSON(fs, "print exactly one JSON object with the ledger on stdout")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	fs.BoolVar(&o.verbose, "verbose", false, "log the stack's warnings (dead letters, lost leases) to stderr")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on /metrics at this address while running (e.g. :9090)")
	fs.BoolVar(&o.outbox, "outbox", false, "run the producer half too: producers write a business row and its event in one transaction (10% rolled back on purpose), relays publish the outbox, consumers apply the effect in the SQL inbox and emit a follow-up through the chained outbox to a second consumer; the ledger adds rolled_back, follow_up_effects and phantom_effects (needs a SQL --store)")
	fs.IntVar(&o.relays, "relays", 2, "outbox relays running at once (with --outbox)")
	fs.BoolVar(&o.keep, "keep", false, "keep what the run created on shared servers (topic, DLQ, dedup records); by default it is deleted at the end")
}

func (o *demoCommand) Validate() error {
	switch {
	case o.events <= 0:
		return fmt.Errorf("--events must be > 0, got %d", o.events)
	case o.inFlight <= 0:
		return fmt.Errorf("--in-flight must be >= 1, got %d", o.inFlight)
	case o.consumers <= 0:
		return fmt.Errorf("--consumers must be >= 1, got %d", o.consumers)
	case o.relays <= 0:
		return fmt.Errorf("--relays must be >= 1, got %d", o.relays)
	}
	if o.outbox {
		spec, err := backend.ParseStore(o.store)
		if err != nil {
			return err
		}
		if k := spec.Kind; k != backend.SQLite && k != backend.Postgres && k != backend.MySQL {
			return demo.ErrOutboxStore
		}
	}
	if _, err := backend.ParseOrdering(o.ordering); err != nil {
		return err
	}
	return checkKafkaOnly(o.broker, o.ordering, 0)
}

func (o *demoCommand) Run(ctx context.Context, e *env) (result, error) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ledger, err := demo.Run(ctx, demo.Options{
		Events:      o.events,
		Faults:      o.faults,
		Consumers:   o.consumers,
		InFlight:    o.inFlight,
		Broker:      o.broker,
		Store:       o.store,
		Ordering:    o.ordering,
		Timeout:     o.timeout,
		Stderr:      e.stderr,
		Progress:    isTerminal(e.stderr),
		Logger:      logger,
		MetricsAddr: o.metricsAddr,
		Keep:        o.keep,
		Outbox:      o.outbox,
		Relays:      o.relays,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted("while setting up, so nothing is judged")
		}
		return nil, err
	}
	ok := "\nOK: every event's effect happened once or it is in the DLQ; nothing lost."
	if o.outbox {
		ok = "\nOK: every committed change had its effect exactly once at each hop, none for a rolled-back one; nothing lost."
	}
	return verdict(&ledgerText{
		title: "idempo demo ledger", ledger: ledger, dlqNote: dlqNote(o.broker, o.keep), okText: ok,
	}, ledger.Verdict())
}

// verdict returns what demo and verify print and how they exit.
func verdict(res *ledgerText, v error) (result, error) {
	switch {
	case errors.Is(v, demo.ErrInterrupted):
		res.interrupted = true
		return res, &statusError{exitInterrupted, v}
	case v != nil:
		return res, failed(fmt.Errorf("FAILED: %w", v))
	}
	res.ok = true
	return res, nil
}

// faultFlags registers the fault-mix flags shared by demo and verify.
func faultFlags(fs *flag.FlagSet, d *demo.Faults) {
	*d = demo.DefaultFaults
	fs.Float64Var(&d.DupRate, "dup-rate", d.DupRate, "share of events the publisher sends twice")
	fs.Float64Var(&d.AckLossRate, "ack-loss-rate", d.AckLossRate, "share of events whose ack is lost after the effect (the message comes again)")
	fs.Float64Var(&d.FailRate, "fail-rate", d.FailRate, "share of events failing transiently (they succeed on retry)")
	fs.Float64Var(&d.PoisonRate, "poison-rate", d.PoisonRate, "share of events failing on every attempt (they must end in the DLQ)")
	fs.Float64Var(&d.PanicRate, "panic-rate", d.PanicRate, "share of events whose handler panics on the first attempt")
	fs.Uint64Var(&d.Seed, "seed", d.Seed, "seed of the fault pattern (the run ID stays fresh)")
}

// orderingFlag registers --ordering, shared by demo and verify.
func orderingFlag(fs *flag.FlagSet, v *string) {
	fs.StringVar(v, "ordering", "partition", "how Kafka consumers hand out a partition: partition (one at a time), key (concurrently, one at a time per record key) or unordered; events are keyed and order_violations is checked where the broker keeps order")
}

// ledgerText is the result of demo and verify: the ledger (and, for
// verify, more rows), whose JSON form is json.
type ledgerText struct {
	title   string
	ledger  demo.Ledger
	json    any // the JSON form; nil means the ledger
	more    []ledgerRow
	dlqNote string
	// okText is printed after the rows when the verdict holds.
	okText string
	// interrupted prints nothing as text: an unfinished run is not judged.
	interrupted, ok bool
}

func (l *ledgerText) MarshalJSON() ([]byte, error) {
	if l.json != nil {
		return json.Marshal(l.json)
	}
	return json.Marshal(l.ledger)
}

func (l *ledgerText) text(w io.Writer) {
	if l.interrupted {
		return
	}
	fmt.Fprintln(w, l.title)
	printRows(w, append(ledgerRows(l.ledger, l.dlqNote), l.more...))
	if l.ok && l.okText != "" {
		fmt.Fprintln(w, l.okText)
	}
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
	rows := []ledgerRow{
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
		orderRow(l.OrderViolations),
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
	if l.PhantomEffects == nil {
		return rows
	}
	return append(rows,
		ledgerRow{"rolled_back", l.RolledBack, "business transactions rolled back on purpose (unique_events counts the committed ones)"},
		ledgerRow{"follow_up_effects", l.FollowUpEffects, "committed rows whose follow-up event had its effect at the second hop"},
		ledgerRow{"phantom_effects", *l.PhantomEffects, "effects of rolled-back rows, at either hop"},
		ledgerRow{"relay_republished", l.RelayRepublished, "relay publishes (of a batch) reported failed after the broker took them: the batch was published again, same UUIDs"},
	)
}

// orderRow is the order_violations row: null where the broker keeps no order.
func orderRow(v *int) ledgerRow {
	if v == nil {
		return ledgerRow{"order_violations", "null", "the broker keeps no order per key"}
	}
	return ledgerRow{"order_violations", *v, "events whose first effect came after a later event's of their key"}
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
