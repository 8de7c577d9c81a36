package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/amqpdlq"
	"github.com/idempo/idempo/dlq/kafkadlq"
)

// printDLQHelp prints the help of idempo dlq.
func printDLQHelp(w io.Writer) {
	printGroupHelp(w, "idempo dlq <list|show|replay|purge> --broker URL --store URL --topic DLQTOPIC [flags]",
		`Inspects and settles dead letters. The DLQ itself is never modified: listing
reads it without consuming (Kafka: no consumer group; RabbitMQ: a stream
queue), and replay and purge record their resolution in the dedup store.

Exit status: 0 ok; 1 no such entry, or nothing matched the given --id, or
nothing done; 2 usage, setup or broker/store errors; 3 replay or purge could
not settle some entries (each is reported; the others were settled); 130
interrupted.`, [][2]string{
			{"list", "list unresolved entries (--all: resolved ones too)"},
			{"show ID", "one entry: payload, metadata and failure history"},
			{"replay", "republish entries to their original topic (or --to), marked as a\nreplay so the consumer's dedup admits them once"},
			{"purge", "mark entries purged: list no longer shows them"},
		}, "Run 'idempo dlq <command> --help' for its flags.")
}

// dlqResolutionRunID names the store namespace of resolution records: fixed,
// so that every invocation sees the resolutions of the previous ones (a SQL
// store keeps them in table idempo_dedup_dlq, Redis under "idempo:dlq:").
const dlqResolutionRunID = "dlq"

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

// errNothingToDo makes a command exit with status 1, as dlq.ErrNotFound does.
var errNothingToDo = errors.New("nothing to do")

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printDLQHelp(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		printDLQHelp(stdout)
		return 0
	case "list":
		return dlqList(ctx, args[1:], stdout, stderr)
	case "show":
		return dlqShow(ctx, args[1:], stdout, stderr)
	case "replay":
		return dlqReplay(ctx, args[1:], stdout, stderr)
	case "purge":
		return dlqPurge(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "idempo dlq: unknown command %q\n\n", args[0])
		printDLQHelp(stderr)
		return 2
	}
}

// dlqCommon holds the flags every dlq command takes.
type dlqCommon struct {
	broker, store, topic string
	timeout              time.Duration
	maxReplays           int
}

func (c *dlqCommon) register(fs *flag.FlagSet) {
	fs.StringVar(&c.broker, "broker", "", "broker URL holding the DLQ: kafka://host:port[,host:port] or amqp://user:pass@host:5672/ (required)")
	fs.StringVar(&c.store, "store", "", "dedup store URL holding the resolution records: redis://host:6379/0, postgres://…, mysql://…, sqlite://PATH (required)")
	fs.StringVar(&c.topic, "topic", "", "the DLQ topic (Kafka) or stream queue (RabbitMQ), e.g. orders.dlq (required)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up after this long")
	fs.IntVar(&c.maxReplays, "max-replays", dlq.DefaultMaxReplays, "replay cap: an event replayed this often goes to the parking topic (DLQ topic + \".parked\") instead")
}

func (c *dlqCommon) validate() error {
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
	return nil
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

func (f *dlqFilters) register(fs *flag.FlagSet, withIDs bool) {
	if withIDs {
		fs.Var(&f.ids, "id", "entry `ID` (repeatable)")
	}
	fs.StringVar(&f.originalTopic, "original-topic", "", "only entries dead-lettered from this topic")
	fs.StringVar(&f.handler, "handler", "", "only entries of this handler")
	fs.StringVar(&f.errorClass, "error-class", "", "only entries with this error class: permanent, retryable, panic")
	fs.StringVar(&f.reason, "reason", "", "only entries with this reason: "+strings.Join(dlqReasons, ", "))
	fs.StringVar(&f.since, "since", "", "only entries dead-lettered at or after this time: RFC 3339, or a duration such as 1h (within the last hour)")
	fs.StringVar(&f.until, "until", "", "only entries dead-lettered before this time: RFC 3339, or a duration such as 30m (more than 30 minutes ago)")
}

var dlqReasons = []string{
	dlq.ReasonPermanent, dlq.ReasonRetriesExhausted, dlq.ReasonDeliveryCap,
	dlq.ReasonMissingEventID, dlq.ReasonInvalidEventID, dlq.ReasonIDCollision, dlq.ReasonMalformed,
}

// narrows reports whether any filter (other than IDs) is set.
func (f *dlqFilters) narrows() bool {
	return f.originalTopic != "" || f.handler != "" || f.errorClass != "" || f.reason != "" || f.since != "" || f.until != ""
}

func (f *dlqFilters) filter(now time.Time) (dlq.Filter, error) {
	out := dlq.Filter{
		IDs: f.ids, OriginalTopic: f.originalTopic, Handler: f.handler,
		ErrorClass: f.errorClass, Reason: f.reason,
	}
	if f.reason != "" && !slices.Contains(dlqReasons, f.reason) {
		return out, fmt.Errorf("--reason %q is not one of %s", f.reason, strings.Join(dlqReasons, ", "))
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

// dlqEnv is what a command works with: Ops on the opened broker and store.
type dlqEnv struct {
	ops     *dlq.Ops
	closers []func() error
}

func (e *dlqEnv) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		_ = e.closers[i]()
	}
}

// openDLQ opens the source (and, for replay, the publisher) on the broker
// and the resolution store.
func openDLQ(ctx context.Context, c *dlqCommon, withPublisher bool) (*dlqEnv, error) {
	bspec, err := backend.ParseBroker(c.broker)
	if err != nil {
		return nil, err
	}
	sspec, err := backend.ParseStore(c.store)
	if err != nil {
		return nil, err
	}
	switch {
	case bspec.Kind == backend.GoChannel:
		return nil, fmt.Errorf("--broker %q: dead letters live on a real broker; give kafka://host:port or amqp://user:pass@host:5672/", c.broker)
	case bspec.Embedded:
		return nil, fmt.Errorf("--broker %q would start an empty in-process Kafka cluster, which holds no dead letters; give your cluster as kafka://host:port", c.broker)
	case sspec.Kind == backend.Memory:
		return nil, fmt.Errorf("--store %q: resolution records in memory vanish when the command ends; give redis://, postgres://, mysql:// or sqlite://PATH", c.store)
	}
	env := &dlqEnv{}
	ok := false
	defer func() {
		if !ok {
			env.Close()
		}
	}()
	var (
		src dlq.Source
		pub message.Publisher
	)
	switch bspec.Kind {
	case backend.Kafka:
		cfg, err := kafka.ParseURL(bspec.Raw)
		if err != nil {
			return nil, err
		}
		s, err := kafkadlq.NewSource(cfg.Brokers)
		if err != nil {
			return nil, err
		}
		env.closers = append(env.closers, s.Close)
		src = s
		if withPublisher {
			p, err := kafka.NewPublisher(cfg, nil)
			if err != nil {
				return nil, err
			}
			env.closers = append(env.closers, p.Close)
			pub = p
		}
	case backend.AMQP:
		cfg, err := amqp.ParseURL(bspec.Raw)
		if err != nil {
			return nil, err
		}
		s, err := amqpdlq.NewSource(cfg.URL, nil)
		if err != nil {
			return nil, err
		}
		env.closers = append(env.closers, s.Close)
		src = s
		if withPublisher {
			p, err := amqpdlq.NewReplayPublisher(cfg, nil, nil)
			if err != nil {
				return nil, err
			}
			env.closers = append(env.closers, p.Close)
			pub = p
		}
	default:
		return nil, fmt.Errorf("--broker %s: not supported by idempo dlq", bspec)
	}
	st, err := backend.OpenStore(ctx, sspec, dlqResolutionRunID)
	if err != nil {
		return nil, err
	}
	env.closers = append(env.closers, st.Close)
	env.ops, err = dlq.NewOps(dlq.OpsConfig{Source: src, Store: st.Store, Publisher: pub, MaxReplays: c.maxReplays})
	if err != nil {
		return nil, err
	}
	ok = true
	return env, nil
}

// parseDLQFlags parses flags and positional arguments in any order.
func parseDLQFlags(fs *flag.FlagSet, args []string) (pos []string, code int, done bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, true
			}
			return nil, 2, true
		}
		if fs.NArg() == 0 {
			return pos, 0, false
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// newDLQFlagSet returns the flag set of idempo dlq name; usage is the
// synopsis and description, separated by a blank line.
func newDLQFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	synopsis, description, _ := strings.Cut(strings.TrimPrefix(usage, "Usage: "), "\n\n")
	return newFlagSet("dlq "+name, synopsis, description, stderr)
}

// dlqFail prints err and returns the exit status for it.
func dlqFail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "idempo dlq %s: %v\n", cmd, err)
	if errors.Is(err, dlq.ErrEntriesFailed) {
		return 3
	}
	if errors.Is(err, errNothingToDo) || errors.Is(err, dlq.ErrNotFound) {
		return 1
	}
	return 2
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func dlqList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		c dlqCommon
		f dlqFilters
	)
	fs := newDLQFlagSet("list", `Usage: idempo dlq list --broker URL --store URL --topic DLQTOPIC [filters]

Lists unresolved dead letters, oldest first, without consuming anything: a
table on a terminal, otherwise one JSON object per line.
`, stderr)
	c.register(fs)
	f.register(fs, true)
	all := fs.Bool("all", false, "include resolved (replayed, purged) entries")
	asJSON := fs.Bool("json", false, "print JSON lines even on a terminal")
	asTable := fs.Bool("table", false, "print a table even when not on a terminal")
	pos, code, done := parseDLQFlags(fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "idempo dlq list: unexpected arguments %q\n", pos)
		return 2
	}
	if err := c.validate(); err != nil {
		return dlqFail(stderr, "list", err)
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return dlqFail(stderr, "list", err)
	}
	filter.All = *all
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	env, err := openDLQ(ctx, &c, false)
	if err != nil {
		return dlqFail(stderr, "list", err)
	}
	defer env.Close()

	table := *asTable || (!*asJSON && isTerminal(stdout))
	var tw *tabwriter.Writer
	enc := json.NewEncoder(stdout)
	if table {
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDEAD-LETTERED\tORIGINAL-TOPIC\tHANDLER\tREASON\tREPLAYS\tSTATUS\tERROR")
	}
	n := 0
	err = env.ops.List(ctx, c.topic, filter, func(e dlq.Entry) error {
		n++
		if !table {
			return enc.Encode(e)
		}
		status := e.Resolution
		if status == "" {
			status = "unresolved"
		}
		if len(e.Problems) > 0 {
			status += " (!)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, fmtTime(e.DeadLetteredAt), dash(e.OriginalTopic), dash(e.Handler),
			dash(e.Reason), e.Replays, status, dash(oneLine(e.Error, 60)))
		return nil
	})
	if tw != nil {
		_ = tw.Flush()
		what := "unresolved entries"
		if *all {
			what = "entries"
		}
		fmt.Fprintf(stdout, "%d %s in %s\n", n, what, c.topic)
	}
	if err != nil {
		return dlqFail(stderr, "list", err)
	}
	if n == 0 && len(filter.IDs) > 0 {
		return dlqFail(stderr, "list", fmt.Errorf("%w: %s in %s", dlq.ErrNotFound, strings.Join(filter.IDs, ", "), c.topic))
	}
	return 0
}

// shownEntry is the JSON form of idempo dlq show.
type shownEntry struct {
	dlq.Entry
	Metadata        map[string]string `json:"metadata"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding"`
	// History lists the other entries of the same event and scope (earlier
	// or later replay cycles), oldest first.
	History []dlq.Entry `json:"history"`
}

func dlqShow(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c dlqCommon
	fs := newDLQFlagSet("show", `Usage: idempo dlq show ID --broker URL --store URL --topic DLQTOPIC [--json]

Shows one entry: where it came from, why it failed, its failure history
(every entry of the same event: one per replay cycle), its metadata and
its payload.
`, stderr)
	c.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, code, done := parseDLQFlags(fs, args)
	if done {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "idempo dlq show: want exactly one entry ID, got %d arguments\n", len(pos))
		return 2
	}
	if err := c.validate(); err != nil {
		return dlqFail(stderr, "show", err)
	}
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	env, err := openDLQ(ctx, &c, false)
	if err != nil {
		return dlqFail(stderr, "show", err)
	}
	defer env.Close()
	e, err := env.ops.Show(ctx, c.topic, pos[0])
	if err != nil {
		return dlqFail(stderr, "show", err)
	}
	out := shownEntry{Entry: e, Metadata: map[string]string(e.Message.Metadata), History: []dlq.Entry{}}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	out.Payload, out.PayloadEncoding = payloadText(e.Message.Payload)
	if e.EventID != "" {
		err = env.ops.List(ctx, c.topic, dlq.Filter{All: true}, func(o dlq.Entry) error {
			if o.ID != e.ID && o.EventID == e.EventID && o.Scope == e.Scope {
				out.History = append(out.History, o)
			}
			return nil
		})
		if err != nil {
			return dlqFail(stderr, "show", err)
		}
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(out); err != nil {
			return dlqFail(stderr, "show", err)
		}
		return 0
	}
	printEntry(stdout, out)
	return 0
}

func printEntry(w io.Writer, s shownEntry) {
	e := s.Entry
	status := e.Resolution
	if status == "" {
		status = "unresolved"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("entry", e.ID)
	row("status", status)
	row("dlq", e.Topic+" @ "+e.Position)
	row("original topic", dash(e.OriginalTopic))
	row("original uuid", dash(e.OriginalUUID))
	row("event id", dash(e.EventID))
	row("handler", dash(e.Handler)+" (scope "+dash(e.Scope)+")")
	row("reason", dash(e.Reason))
	row("error class", dash(e.ErrorClass))
	row("error", dash(e.Error))
	row("attempts", fmt.Sprint(e.Attempts))
	row("deliveries", fmt.Sprint(e.Deliveries))
	row("replays", fmt.Sprint(e.Replays))
	row("first failure", fmtTime(e.FirstFailure))
	row("last failure", fmtTime(e.LastFailure))
	row("dead-lettered at", fmtTime(e.DeadLetteredAt))
	for _, p := range e.Problems {
		row("problem", p)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nfailure history (%d other entries of this event)\n", len(s.History))
	if len(s.History) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tDEAD-LETTERED\tREPLAYS\tREASON\tSTATUS\tERROR")
		for _, h := range s.History {
			st := h.Resolution
			if st == "" {
				st = "unresolved"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", h.ID, fmtTime(h.DeadLetteredAt), h.Replays, dash(h.Reason), st, dash(oneLine(h.Error, 60)))
		}
		_ = tw.Flush()
	}
	if stack := s.Metadata[dlq.KeyPanicStack]; stack != "" {
		fmt.Fprintf(w, "\npanic stack\n%s\n", stack)
	}
	keys := make([]string, 0, len(s.Metadata))
	for k := range s.Metadata {
		if k != dlq.KeyPanicStack {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	fmt.Fprintf(w, "\nmetadata (%d keys)\n", len(keys))
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", k, oneLine(s.Metadata[k], 200))
	}
	fmt.Fprintf(w, "\npayload (%d bytes, %s)\n%s\n", len(e.Message.Payload), s.PayloadEncoding, s.Payload)
}

func dlqReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		c dlqCommon
		f dlqFilters
	)
	fs := newDLQFlagSet("replay", `Usage: idempo dlq replay --broker URL --store URL --topic DLQTOPIC (--id ID... | filters | --all-unresolved) [--to TOPIC] [--dry-run]

Republishes unresolved entries to their original topic (or --to) with their
original UUID, payload and metadata, marked as a replay: the consumer's dedup
admits each replay once, and a repeated replay is a duplicate. An entry is
marked replayed only after the broker confirmed the republish, so a crash
leaves it unresolved, never lost. An event replayed --max-replays times goes
to the parking topic (the DLQ topic + ".parked") instead. An entry that
cannot be replayed (e.g. no original topic and no --to) is reported and left
unresolved, the rest are replayed, and the exit status is 3.
`, stderr)
	c.register(fs)
	f.register(fs, true)
	allUnresolved := fs.Bool("all-unresolved", false, "replay every unresolved entry")
	dryRun := fs.Bool("dry-run", false, "print what would be replayed; change nothing")
	to := fs.String("to", "", "publish every replay to this topic instead of each entry's original topic")
	asJSON := fs.Bool("json", false, "print the counts as one JSON object")
	pos, code, done := parseDLQFlags(fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "idempo dlq replay: unexpected arguments %q (entry IDs go in --id)\n", pos)
		return 2
	}
	if err := c.validate(); err != nil {
		return dlqFail(stderr, "replay", err)
	}
	if len(f.ids) == 0 && !f.narrows() && !*allUnresolved {
		return dlqFail(stderr, "replay", errors.New("nothing selected: give --id, a filter (--original-topic, --handler, --reason, --error-class, --since, --until) or --all-unresolved"))
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return dlqFail(stderr, "replay", err)
	}
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	env, err := openDLQ(ctx, &c, !*dryRun)
	if err != nil {
		return dlqFail(stderr, "replay", err)
	}
	defer env.Close()

	progress := isTerminal(stderr)
	seen := map[string]bool{}
	would := map[string]int{}
	opts := dlq.ReplayOptions{To: *to, DryRun: *dryRun, Progress: func(n int, e dlq.Entry, action string) {
		seen[e.ID] = true
		if *dryRun && action != "failed" {
			kind := strings.TrimPrefix(action, "dry-run ")
			would[kind]++
			dest := *to
			if dest == "" {
				dest = e.OriginalTopic
			}
			if kind == "park" {
				dest = c.topic + ".parked"
			}
			if !*asJSON {
				fmt.Fprintf(stdout, "would %s %s (event %s, replays %d) to %s\n", kind, e.ID, dash(e.EventID), e.Replays, dest)
			}
			return
		}
		if progress {
			fmt.Fprintf(stderr, "\r%d entries: %-6s %s", n, action, e.ID)
		}
	}}
	res, err := env.ops.Replay(ctx, c.topic, filter, opts)
	if progress && !*dryRun && len(seen) > 0 {
		fmt.Fprintln(stderr)
	}
	if *dryRun {
		res = dlq.ReplayResult{Replayed: would["replay"], Parked: would["park"], Failed: res.Failed, Failures: res.Failures}
	}
	printFailures(stderr, "replay", res.Failures)
	if *asJSON {
		_ = json.NewEncoder(stdout).Encode(struct {
			dlq.ReplayResult
			DryRun bool `json:"dry_run"`
		}{res, *dryRun})
	} else if *dryRun {
		fmt.Fprintf(stdout, "dry run: would replay %d, park %d, fail %d; nothing was changed\n", res.Replayed, res.Parked, res.Failed)
	} else {
		fmt.Fprintf(stdout, "replayed %d, parked %d, skipped %d, failed %d\n", res.Replayed, res.Parked, res.Skipped, res.Failed)
	}
	if err != nil {
		return dlqFail(stderr, "replay", err)
	}
	if err := unmatchedIDs(ctx, env.ops, c.topic, f.ids, seen); err != nil {
		return dlqFail(stderr, "replay", err)
	}
	return 0
}

// printFailures reports each entry a replay or purge could not settle.
func printFailures(stderr io.Writer, cmd string, failures []*dlq.EntryError) {
	for _, f := range failures {
		fmt.Fprintf(stderr, "idempo dlq %s: %v\n", cmd, f)
	}
}

// unmatchedIDs explains the given IDs that no unresolved entry matched.
func unmatchedIDs(ctx context.Context, ops *dlq.Ops, topic string, ids []string, seen map[string]bool) error {
	var problems []string
	notFound := false
	for _, id := range ids {
		if seen[id] {
			continue
		}
		e, err := ops.Show(ctx, topic, id)
		switch {
		case errors.Is(err, dlq.ErrNotFound):
			notFound = true
			problems = append(problems, fmt.Sprintf("%q in %s", id, topic))
		case err != nil:
			return err
		default:
			problems = append(problems, fmt.Sprintf("%q is already %s", id, e.Resolution))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if notFound {
		return fmt.Errorf("%w: %s", dlq.ErrNotFound, strings.Join(problems, "; "))
	}
	return fmt.Errorf("%w: %s", errNothingToDo, strings.Join(problems, "; "))
}

func dlqPurge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		c dlqCommon
		f dlqFilters
	)
	fs := newDLQFlagSet("purge", `Usage: idempo dlq purge --broker URL --store URL --topic DLQTOPIC (--id ID... | filters | --all-unresolved) [--yes]

Marks unresolved entries purged, so that list no longer shows them (the DLQ
itself is append-only and keeps them until its retention ends). Asks
"Purge N entries? [y/N]" on the terminal unless --yes; without a terminal
it refuses unless --yes.
`, stderr)
	c.register(fs)
	f.register(fs, true)
	allUnresolved := fs.Bool("all-unresolved", false, "purge every unresolved entry")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	pos, code, done := parseDLQFlags(fs, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "idempo dlq purge: unexpected arguments %q (entry IDs go in --id)\n", pos)
		return 2
	}
	if err := c.validate(); err != nil {
		return dlqFail(stderr, "purge", err)
	}
	if len(f.ids) == 0 && !f.narrows() && !*allUnresolved {
		return dlqFail(stderr, "purge", errors.New("nothing selected: give --id, a filter (--original-topic, --handler, --reason, --error-class, --since, --until) or --all-unresolved"))
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return dlqFail(stderr, "purge", err)
	}
	if !*yes && !dlqStdinIsTerminal() {
		return dlqFail(stderr, "purge", errors.New("refusing to purge without confirmation: stdin is not a terminal (pass --yes)"))
	}
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	env, err := openDLQ(ctx, &c, false)
	if err != nil {
		return dlqFail(stderr, "purge", err)
	}
	defer env.Close()
	var ids []string
	seen := map[string]bool{}
	if err := env.ops.List(ctx, c.topic, filter, func(e dlq.Entry) error {
		if !seen[e.ID] {
			seen[e.ID] = true
			ids = append(ids, e.ID)
		}
		return nil
	}); err != nil {
		return dlqFail(stderr, "purge", err)
	}
	if len(ids) == 0 {
		if err := unmatchedIDs(ctx, env.ops, c.topic, f.ids, seen); err != nil {
			return dlqFail(stderr, "purge", err)
		}
		fmt.Fprintln(stdout, "nothing to purge")
		return 0
	}
	if !*yes {
		fmt.Fprintf(stderr, "Purge %d entries? [y/N] ", len(ids))
		answer, _ := bufio.NewReader(dlqStdin).ReadString('\n')
		switch strings.ToLower(strings.TrimSpace(answer)) {
		case "y", "yes":
		default:
			fmt.Fprintln(stderr, "not purged")
			return 1
		}
	}
	// Only the entries counted above: one dead-lettered meanwhile waits.
	res, err := env.ops.Purge(ctx, c.topic, dlq.Filter{IDs: ids}, dlq.ReplayOptions{})
	printFailures(stderr, "purge", res.Failures)
	fmt.Fprintf(stdout, "purged %d, skipped %d, failed %d\n", res.Purged, res.Skipped, res.Failed)
	if err != nil {
		return dlqFail(stderr, "purge", err)
	}
	if err := unmatchedIDs(ctx, env.ops, c.topic, f.ids, seen); err != nil {
		return dlqFail(stderr, "purge", err)
	}
	return 0
}

func payloadText(b []byte) (string, string) {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\r' && r != '\t' }) {
		return string(b), "text"
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
