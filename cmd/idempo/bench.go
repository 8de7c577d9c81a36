package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/bench"
)

// benchCommand is idempo bench.
type benchCommand struct {
	jsonFlag
	o               bench.Options
	rounds, warmup  int
	matrix          bool
	brokers, stores string
	fs              *flag.FlagSet
	ob              outboxBenchFlags // --outbox, see bench_outbox.go
}

func (*benchCommand) usage() (string, string, string) {
	return "bench", "idempo bench [flags]", `Measures what idempo's stack costs on a broker and store. The same workload
(--events messages, a trivial handler) runs through three handlers in
alternation, each round on fresh topics:

  bare       a Watermill router handler, no middleware
  watermill  Watermill's PoisonQueue + Retry + Deduplicator (keyed by UUID)
  idempo     idempo's stack on --store, dead letters on --broker

With --ordering key or unordered on Kafka a fourth variant, sequential (idempo
with the consumers in partition order), runs in every round, and the report
adds ratio_vs_sequential: how many times faster the chosen ordering is. Use
--partitions, --keys and --work (time the handler spends per message, as for
an I/O call) to shape the workload.

With --inbox (SQL stores) the variants are no_inbox, a handler running one
business INSERT in a transaction of its own per message without dedup, and
idempo as the transactional inbox with the same INSERT through
sqlstore.TxFromContext; the report adds ratio_vs_no_inbox, the share of the
business transaction's throughput the inbox keeps.

It prints per variant events/s (first delivery to last ack), p50/p99
handler-to-ack latency, allocations and CPU time per message (the whole
process, broker client included; the embedded Kafka cluster runs in a child
process, so every variant reaches it over a socket), the leases the stack
lost, the mean batch of the store's statements (SQL: rows per claim and
per completion statement; Redis: script calls per round trip), and idempo's
cost (time per message) relative to the other two. On Redis it adds
ratio_vs_floor: idempo's events/s against go-redis alone sending the
store's claim and complete scripts for fresh keys, pipelined, as many in
flight as idempo had. Every message must be acked with its effect exactly once: otherwise the
run fails with exit status 1 and no figures.

With --matrix it runs every broker × store combination (default: gochannel,
embedded kafka and amqp://guest:guest@127.0.0.1:5672/ × memory, redis,
postgres and sqlite on 127.0.0.1) with --events defaulting to 5000, skips
combinations whose server is unreachable, and prints a markdown table for
docs/benchmarks.md. The default matrix takes a few minutes.

Exit status: 0 ok; 1 a workload check failed; 2 usage and setup errors; 130
interrupted (no figures).`
}

func (c *benchCommand) flags(fs *flag.FlagSet) {
	o := &c.o
	fs.StringVar(&o.Broker, "broker", "gochannel", "broker URL: gochannel, kafka (embedded), kafka://host:port[,host:port], amqp://user:pass@host:5672/, nats://host:4222")
	fs.StringVar(&o.Store, "store", "memory", "dedup store URL of the idempo variant: memory, redis://host:6379/0, postgres://…, mysql://…, sqlite, sqlite://PATH")
	fs.IntVar(&o.Events, "events", bench.DefaultEvents, fmt.Sprintf("messages per round and variant (with --matrix the default is %d)", bench.DefaultMatrixEvents))
	fs.IntVar(&c.rounds, "rounds", bench.DefaultRounds, "rounds; each runs every variant once, in rotating order (0 with --memory: memory figures only)")
	fs.IntVar(&c.warmup, "warmup", bench.DefaultWarmup, "messages per variant of an unrecorded first round (0 for none; at most --events)")
	fs.IntVar(&o.Consumers, "consumers", bench.DefaultConsumers, "router handlers per round (a consumer group on Kafka and RabbitMQ; one topic each on gochannel)")
	fs.IntVar(&o.InFlight, "in-flight", bench.DefaultInFlight, "on gochannel: messages in flight per consumer, handled concurrently by the router (RabbitMQ consumers and Kafka in partition order take one at a time: use --consumers; Kafka in key or unordered order takes up to 64 per partition)")
	fs.StringVar(&o.Ordering, "ordering", "partition", "how Kafka consumers hand out a partition: partition (one at a time), key (concurrently, one at a time per key) or unordered; other than partition adds a sequential variant (idempo in partition order) and ratio_vs_sequential")
	fs.IntVar(&o.Partitions, "partitions", 1, "partitions per topic of the embedded Kafka cluster")
	fs.IntVar(&o.Keys, "keys", bench.DefaultKeys, "record keys the messages are spread over")
	fs.DurationVar(&o.Work, "work", 0, "time the handler spends on each message, as for an I/O call (e.g. 1ms)")
	c.registerJSON(fs, "print exactly one JSON object on stdout")
	fs.BoolVar(&o.Inbox, "inbox", false, "SQL stores: the transactional inbox (one business INSERT per message through sqlstore.TxFromContext) against the same business transaction without dedup (variants no_inbox and idempo; ratio_vs_no_inbox)")
	fs.BoolVar(&o.Memory, "memory", false, "also measure what the store keeps per key (in-flight keys in memory; MEMORY USAGE in Redis; table size per row in SQL)")
	fs.IntVar(&o.MemoryKeys, "memory-keys", bench.DefaultMemoryKeys, "in-flight keys claimed in the memory store for --memory (server stores write at most 10000)")
	fs.BoolVar(&c.matrix, "matrix", false, "run every --brokers × --stores combination and print one markdown table")
	fs.StringVar(&c.brokers, "brokers", strings.Join(bench.MatrixBrokers, ","), "comma-separated brokers of --matrix")
	fs.StringVar(&c.stores, "stores", strings.Join(bench.MatrixStores, ","), "comma-separated stores of --matrix")
	fs.DurationVar(&o.Timeout, "timeout", bench.DefaultTimeout, "give up after this long (with --matrix: per combination)")
	c.outboxFlags(fs)
	c.fs = fs
}

func (c *benchCommand) Validate() error {
	if c.ob.on {
		return c.validateOutbox()
	}
	if err := c.checkOutboxFlags(); err != nil {
		return err
	}
	o := &c.o
	// Zero means "the default" to package bench; on the command line it is
	// a mistake.
	for _, f := range []struct {
		name string
		v    int
	}{{"events", o.Events}, {"consumers", o.Consumers}, {"in-flight", o.InFlight}, {"memory-keys", o.MemoryKeys}, {"partitions", o.Partitions}, {"keys", o.Keys}} {
		if f.v <= 0 {
			return fmt.Errorf("--%s must be > 0, got %d", f.name, f.v)
		}
	}
	if _, err := backend.ParseOrdering(o.Ordering); err != nil {
		return err
	}
	if !c.matrix {
		if err := checkKafkaOnly(o.Broker, o.Ordering, o.Partitions); err != nil {
			return err
		}
	}
	if o.Work < 0 {
		return fmt.Errorf("--work must be >= 0, got %v", o.Work)
	}
	if c.rounds < 0 {
		return fmt.Errorf("--rounds must be >= 0, got %d", c.rounds)
	}
	if c.warmup < 0 {
		return fmt.Errorf("--warmup must be >= 0, got %d", c.warmup)
	}
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.matrix && (set["broker"] || set["store"]) {
		return errors.New("--matrix takes --brokers and --stores, not --broker and --store")
	}
	if c.matrix && o.Inbox {
		return errors.New("--inbox runs one store, not --matrix")
	}
	if o.Inbox {
		if spec, err := backend.ParseStore(o.Store); err == nil && spec.Kind != backend.Postgres && spec.Kind != backend.MySQL && spec.Kind != backend.SQLite {
			return fmt.Errorf("--inbox needs a SQL store (postgres, mysql or sqlite), got %s", spec)
		}
	}
	if c.matrix && !set["events"] {
		o.Events = bench.DefaultMatrixEvents
	}
	o.Rounds, o.Warmup = c.rounds, min(c.warmup, o.Events)
	if c.rounds == 0 {
		o.Rounds = -1
	}
	if c.warmup == 0 {
		o.Warmup = -1
	}
	return nil
}

func (c *benchCommand) Run(ctx context.Context, e *env) (result, error) {
	c.o.Stderr, c.o.Progress = e.stderr, isTerminal(e.stderr)
	c.o.ChildBroker = true
	if c.ob.on {
		return c.runOutbox(ctx, e)
	}
	if c.matrix {
		return c.runMatrix(ctx, e)
	}
	rep, err := bench.Run(ctx, c.o)
	if ctx.Err() != nil {
		return nil, interrupted("a run cut short measures nothing, so there are no figures")
	}
	if err != nil {
		return nil, checkFailed(err)
	}
	return report{rep}, nil
}

func (c *benchCommand) runMatrix(ctx context.Context, e *env) (result, error) {
	res, err := bench.RunMatrix(ctx, bench.MatrixOptions{
		Options: c.o, Brokers: splitList(c.brokers), Stores: splitList(c.stores),
		Command: commandLine(e.args),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted("before the matrix started, so there are no figures")
		}
		return nil, checkFailed(err)
	}
	var out result = matrixReport{res}
	switch {
	case ctx.Err() != nil:
		return out, interrupted("the combinations it did not finish are marked skipped")
	case res.Failed():
		return out, failed(errors.New("FAILED: a combination did not pass its workload check"))
	}
	return out, nil
}

// checkFailed gives a failed workload check exit status 1.
func checkFailed(err error) error {
	if errors.Is(err, bench.ErrCheck) {
		return failed(err)
	}
	return err
}

// matrixReport prints the matrix as markdown, in one write so that the
// output's redactor sees every line whole.
type matrixReport struct{ *bench.MatrixResult }

func (m matrixReport) MarshalJSON() ([]byte, error) { return json.Marshal(m.MatrixResult) }

func (m matrixReport) text(w io.Writer) {
	var buf bytes.Buffer
	m.Markdown(&buf)
	_, _ = w.Write(buf.Bytes())
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// commandLine renders the command for the report, credentials redacted
// and arguments quoted for a POSIX shell where needed.
func commandLine(args []string) string {
	parts := []string{"idempo", "bench"}
	for _, a := range args {
		parts = append(parts, shellQuote(backend.Redact(a)))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=.,:/@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// report is the result of one bench run.
type report struct{ *bench.Report }

func (r report) MarshalJSON() ([]byte, error) { return json.Marshal(r.Report) }

func (rep report) text(w io.Writer) {
	r := rep.Report
	fmt.Fprintf(w, "idempo bench (run %s; broker %s; store %s)\n", r.RunID, r.Broker, r.Store)
	if r.Rounds > 0 {
		fmt.Fprintf(w, "%d events per round, %d rounds per variant (+ %d-message warm-up), %d consumer(s)\n\n",
			r.Events, r.Rounds, r.Warmup, r.Consumers)
		fmt.Fprintf(w, "  %-10s %12s %10s %10s %10s %11s %10s %10s\n", "variant", "events/s", "ns/msg", "p50", "p99", "allocs/msg", "bytes/msg", "cpu µs/msg")
		rows := []struct {
			name string
			res  bench.VariantResult
		}{{"bare", r.Variants.Bare}, {"watermill", r.Variants.Watermill}, {"idempo", r.Variants.Idempo}}
		if r.Variants.Sequential != nil {
			rows = append(rows, struct {
				name string
				res  bench.VariantResult
			}{"sequential", *r.Variants.Sequential})
		}
		if r.Variants.NoInbox != nil {
			rows[0].name, rows[0].res = "no_inbox", *r.Variants.NoInbox
			rows = append(rows[:1], rows[2])
		}
		for _, v := range rows {
			fmt.Fprintf(w, "  %-10s %12s %10s %10s %10s %11.1f %10s %10.1f\n", v.name,
				bench.FormatCount(v.res.EventsPerSec), bench.FormatCount(v.res.NsPerMsg),
				bench.FormatUS(v.res.P50US), bench.FormatUS(v.res.P99US), v.res.AllocsPerMsg, bench.FormatCount(v.res.BytesPerMsg), v.res.CPUUSPerMsg)
		}
		if r.Variants.NoInbox != nil {
			fmt.Fprintf(w, "\nthe inbox keeps %.2f of the business transaction's throughput without it (ratio_vs_no_inbox).\n", r.RatioVsNoInbox)
		} else {
			fmt.Fprintf(w, "\nidempo costs %.2f× bare and %.2f× watermill per message (cost = time per message).\n", r.RatioVsBare, r.RatioVsWatermill)
		}
		if r.Variants.Sequential != nil {
			fmt.Fprintf(w, "ordering %s (%d partitions, %d keys, %v of work per message) is %.2f× as fast as partition order.\n",
				r.Ordering, r.Partitions, r.Keys, time.Duration(r.WorkMS*float64(time.Millisecond)), r.RatioVsSequential)
		}
		if r.FloorEventsPerSec > 0 {
			fmt.Fprintf(w, "go-redis alone sending the store's claim and complete scripts (fresh keys, %d in flight, pipelined) does %s events/s: idempo reaches %.2f of it.\n",
				r.Variants.Idempo.PeakInFlight, bench.FormatCount(r.FloorEventsPerSec), r.RatioVsFloor)
		}
		if s := r.Variants.Idempo.StoreServerUSPerMsg; s > 0 {
			fmt.Fprintf(w, "the store's server spent %.1f µs of CPU per message on idempo's commands (all its clients' commands during the rounds).\n", s)
		}
		if v := r.Variants.Idempo; v.ClaimRowsPerStatement > 0 && v.CompleteRowsPerStatement > 0 {
			fmt.Fprintf(w, "the store's statements carried %.1f claims and %.1f completions each on average (shared between handlers in flight).\n",
				v.ClaimRowsPerStatement, v.CompleteRowsPerStatement)
		} else if v.ClaimRowsPerStatement > 0 {
			fmt.Fprintf(w, "the store's claim statements carried %.1f claims each on average (shared between handlers in flight).\n", v.ClaimRowsPerStatement)
		} else if v.CallsPerRoundTrip > 0 {
			fmt.Fprintf(w, "the store's round trips carried %.1f script calls each on average (pipelines shared between handlers in flight).\n", v.CallsPerRoundTrip)
		}
		if lost := r.Variants.Idempo.LeaseLost + seqLeaseLost(r); lost > 0 {
			fmt.Fprintf(w, "warning: the stack lost %d leases (more claims at once than the store served in a lease); see middleware.Config.MaxClaims.\n", lost)
		}
		fmt.Fprintln(w, "events/s: first delivery to last ack; p50/p99: handler start to ack; allocations: the whole process (broker client, router and, on gochannel, the publisher included).")
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "\nmemory (%s): %d %s records, %s bytes per key, %.1f MiB per 100k keys (%s)",
			m.Store, m.Keys, m.State, bench.FormatCount(m.BytesPerKey), m.MiBPer100kKeys, m.Method)
		if m.PeakRSSBytes > 0 {
			fmt.Fprintf(w, "; process peak RSS %.0f MiB", float64(m.PeakRSSBytes)/(1<<20))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
}

// seqLeaseLost is the sequential variant's lost leases, 0 without one.
func seqLeaseLost(r *bench.Report) int64 {
	if r.Variants.Sequential == nil {
		return 0
	}
	return r.Variants.Sequential.LeaseLost
}
