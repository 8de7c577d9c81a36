package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
)

// printDLQHelp prints the help of idempo dlq.
func printDLQHelp(w io.Writer) {
	printGroupHelp(w, "idempo dlq <list|show|replay|purge> --broker URL --store URL --topic DLQTOPIC [flags]",
		`Inspects and settles dead letters. The DLQ itself is never modified: listing
reads it without consuming (Kafka: no consumer group; RabbitMQ: a stream
queue), and replay and purge record their resolution, with who and when, in
the resolution store (--store).

Exit status: 0 ok, also when a filter or --all-unresolved selects
nothing; 1 no such entry, a given --id or --snapshot had nothing left to do,
or a purge was declined; 2 usage, setup or broker/store errors; 3 replay or
purge could not settle some entries (each is reported; the others were
settled); 130 interrupted.`, [][2]string{
			{"list", "list unresolved entries (--all: resolved ones too)"},
			{"show ID", "one entry: payload, metadata and failure history"},
			{"replay", "republish entries to their original topic (or --to), marked as a\nreplay so the consumer's dedup admits them once"},
			{"purge", "mark entries purged: list no longer shows them"},
		}, "Run 'idempo dlq <command> --help' for its flags.")
}

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printDLQHelp(stderr)
		return 2
	}
	var cmd command
	switch args[0] {
	case "help", "-h", "--help", "-help":
		printDLQHelp(stdout)
		return 0
	case "list":
		cmd = &dlqList{}
	case "show":
		cmd = &dlqShow{}
	case "replay":
		cmd = &dlqReplay{}
	case "purge":
		cmd = &dlqPurge{}
	default:
		fmt.Fprintf(stderr, "idempo dlq: unknown command %q\n\n", args[0])
		printDLQHelp(stderr)
		return 2
	}
	return runCommand(ctx, cmd, args[1:], stdout, stderr)
}

// Injected by tests: where purge reads its confirmation.
var (
	dlqStdin           io.Reader = os.Stdin
	dlqStdinIsTerminal           = stdinIsTerminal
)

// stdinIsTerminal reports whether stdin is a character device other than
// /dev/null (which is one too, and is what a cron job or CI gets).
func stdinIsTerminal() bool {
	if !isTerminal(os.Stdin) {
		return false
	}
	in, err := os.Stdin.Stat()
	if err != nil {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(in, null)
}

// dlqTarget is a command working on dead letters: the runner opens its
// broker and store, once, and hands it dlqops.Ops on them (env.ops).
type dlqTarget interface {
	target() *dlqCommon
}

// dlqCommon holds the flags every dlq command takes.
type dlqCommon struct {
	broker, store, topic string
	timeout              time.Duration
	maxReplays           int
	// operator names who acts in the resolution records (replay, purge).
	operator string
	// replay opens a publisher to replay through, too.
	replay bool
}

func (c *dlqCommon) target() *dlqCommon { return c }

func (c *dlqCommon) targetFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.broker, "broker", "", "broker URL holding the DLQ: kafka://host:port[,host:port], amqp://user:pass@host:5672/ or nats://host:4222 (required)")
	fs.StringVar(&c.store, "store", "", "store URL holding the resolution records: redis://host:6379/0, postgres://…, mysql://…, sqlite://PATH (required)")
	fs.StringVar(&c.topic, "topic", "", "the DLQ topic (Kafka) or stream queue (RabbitMQ), e.g. orders.dlq (required)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up after this long")
	fs.IntVar(&c.maxReplays, "max-replays", dlqops.DefaultMaxReplays, "replay cap: an event replayed this often goes to the parking topic (DLQ topic + \".parked\") instead")
}

func (c *dlqCommon) validateTarget() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--broker", c.broker}, {"--store", c.store}, {"--topic", c.topic}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s required", strings.Join(missing, ", "))
	}
	if c.maxReplays < 1 {
		return fmt.Errorf("--max-replays must be >= 1, got %d", c.maxReplays)
	}
	if len(c.operator) > resolution.MaxLen {
		return fmt.Errorf("--operator is %d bytes, more than %d", len(c.operator), resolution.MaxLen)
	}
	return nil
}

// openDLQ opens the source (and, for replay, the publisher) on the broker
// and the resolution store, through package backend, and sets e.ops.
func openDLQ(ctx context.Context, c *dlqCommon, e *env) error {
	bspec, err := backend.ParseBroker(c.broker)
	if err != nil {
		return err
	}
	sspec, err := backend.ParseStore(c.store)
	if err != nil {
		return err
	}
	switch {
	case bspec.Kind == backend.GoChannel:
		return fmt.Errorf("--broker %q: dead letters live on a real broker; give kafka://host:port, amqp://user:pass@host:5672/ or nats://host:4222", c.broker)
	case bspec.Embedded:
		return fmt.Errorf("--broker %q would start an empty in-process Kafka cluster, which holds no dead letters; give your cluster as kafka://host:port", c.broker)
	case sspec.Kind == backend.Memory:
		return fmt.Errorf("--store %q: resolution records in memory vanish when the command ends; give redis://, postgres://, mysql:// or sqlite://PATH", c.store)
	}
	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.ForDLQ(c.replay))
	if err != nil {
		return fmt.Errorf("open broker %s: %w", bspec, err)
	}
	st, err := backend.OpenResolutions(ctx, sspec)
	if err != nil {
		_ = broker.Close()
		return fmt.Errorf("open store %s: %w", sspec, err)
	}
	e.close = func() {
		_ = st.Close()
		_ = broker.Close()
	}
	e.ops, err = dlqops.New(dlqops.Config{Source: broker.Source, Resolutions: st.Store, Publisher: broker.Replay, MaxReplays: c.maxReplays, Operator: c.operator})
	if err != nil {
		e.close()
		e.close = func() {}
		return err
	}
	return nil
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// dlqFilters holds the entry-selection flags.
type dlqFilters struct {
	ids                                        stringList
	originalTopic, handler, errorClass, reason string
	since, until                               string
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func (f *dlqFilters) filterFlags(fs *flag.FlagSet) {
	fs.Var(&f.ids, "id", "entry `ID` (repeatable)")
	fs.StringVar(&f.originalTopic, "original-topic", "", "only entries dead-lettered from this topic")
	fs.StringVar(&f.handler, "handler", "", "only entries of this handler")
	fs.StringVar(&f.errorClass, "error-class", "", "only entries with this error class: "+strings.Join(dlqErrorClasses, ", "))
	fs.StringVar(&f.reason, "reason", "", "only entries with this reason: "+strings.Join(dlqReasons, ", "))
	fs.StringVar(&f.since, "since", "", "only entries dead-lettered at or after this time: RFC 3339, or a duration such as 1h (within the last hour)")
	fs.StringVar(&f.until, "until", "", "only entries dead-lettered before this time: RFC 3339, or a duration such as 30m (more than 30 minutes ago)")
}

var dlqReasons = []string{
	dlq.ReasonPermanent, dlq.ReasonRetriesExhausted, dlq.ReasonDeliveryCap,
	dlq.ReasonMissingEventID, dlq.ReasonInvalidEventID, dlq.ReasonInvalidScope, dlq.ReasonIDCollision, dlq.ReasonMalformed,
}

// dlqErrorClasses are the values of idempo_error_class (docs/dlq.md).
var dlqErrorClasses = []string{"permanent", "retryable", "panic"}

func (f *dlqFilters) filter(now time.Time) (dlqops.Filter, error) {
	out := dlqops.Filter{
		IDs: f.ids, OriginalTopic: f.originalTopic, Handler: f.handler,
		ErrorClass: f.errorClass, Reason: f.reason,
	}
	if f.reason != "" && !slices.Contains(dlqReasons, f.reason) {
		return out, fmt.Errorf("--reason %q is not one of %s", f.reason, strings.Join(dlqReasons, ", "))
	}
	if f.errorClass != "" && !slices.Contains(dlqErrorClasses, f.errorClass) {
		return out, fmt.Errorf("--error-class %q is not one of %s", f.errorClass, strings.Join(dlqErrorClasses, ", "))
	}
	var err error
	if out.Since, err = parseWhen("--since", f.since, now); err != nil {
		return out, err
	}
	if out.Until, err = parseWhen("--until", f.until, now); err != nil {
		return out, err
	}
	if !out.Since.IsZero() && !out.Until.IsZero() && !out.Since.Before(out.Until) {
		return out, fmt.Errorf("--since (%s) must be before --until (%s)", out.Since.Format(time.RFC3339), out.Until.Format(time.RFC3339))
	}
	return out, nil
}

// parseWhen reads an RFC 3339 time or a duration back from now.
func parseWhen(flagName, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is neither an RFC 3339 time (2006-01-02T15:04:05Z) nor a duration (90m, 24h)", flagName, v)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("%s %q: the duration must be positive (it counts back from now)", flagName, v)
	}
	return now.Add(-d), nil
}

// dlqSelection is what replay and purge act on: entries by --id, by
// filters, every unresolved one, or a dry run's --snapshot; one of them
// must be given.
type dlqSelection struct {
	dlqFilters
	allUnresolved bool
	snapshot      string
}

// selectionFlags adds the selection flags; verb is "replay" or "purge".
func (s *dlqSelection) selectionFlags(fs *flag.FlagSet, verb string) {
	s.filterFlags(fs)
	fs.BoolVar(&s.allUnresolved, "all-unresolved", false, verb+" every unresolved entry")
	fs.StringVar(&s.snapshot, "snapshot", "", verb+" exactly the entries a --dry-run counted: the `TOKEN` it printed (entries dead-lettered since are left alone)")
}

// selection checks that something is selected (or a snapshot given, which
// holds its selection) and returns the filter.
func (s *dlqSelection) selection(now time.Time) (dlqops.Filter, error) {
	f := s.dlqFilters
	narrows := f.originalTopic != "" || f.handler != "" || f.errorClass != "" || f.reason != "" || f.since != "" || f.until != ""
	if s.snapshot != "" {
		if len(f.ids) > 0 || narrows || s.allUnresolved {
			return dlqops.Filter{}, errors.New("--snapshot holds its dry run's selection: drop --id, the filters and --all-unresolved")
		}
		if err := dlqops.CheckSnapshot(s.snapshot); err != nil {
			return dlqops.Filter{}, fmt.Errorf("--snapshot: %w", err)
		}
		return dlqops.Filter{}, nil
	}
	if len(f.ids) == 0 && !narrows && !s.allUnresolved {
		return dlqops.Filter{}, errors.New("nothing selected: give --id, a filter (--original-topic, --handler, --reason, --error-class, --since, --until) or --all-unresolved")
	}
	return s.filter(now)
}

// noArgs rejects positional arguments of replay and purge.
func noArgs(pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("unexpected arguments %q (entry IDs go in --id)", pos)
	}
	return nil
}
