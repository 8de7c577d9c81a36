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

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/cmd/idempo/internal/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", "idempo bench [flags]", `Measures what idempo's stack costs on a broker and store. The same workload
(--events messages, a trivial handler) runs through three handlers in
alternation, each round on fresh topics:

  bare       a Watermill router handler, no middleware
  watermill  Watermill's PoisonQueue + Retry + Deduplicator (keyed by UUID)
  idempo     idempo's stack on --store, dead letters on --broker

and prints per variant events/s (first delivery to last ack), p50/p99
handler-to-ack latency, allocations per message (the whole process, broker
client included) and idempo's cost (time per message) relative to the other
two. Every message must be acked with its effect exactly once: otherwise the
run fails with exit status 1 and no figures.

With --matrix it runs every broker × store combination (default: gochannel,
embedded kafka and amqp://guest:guest@127.0.0.1:5672/ × memory, redis,
postgres and sqlite on 127.0.0.1) with --events defaulting to 5000, skips
combinations whose server is unreachable, and prints a markdown table for
docs/benchmarks.md. The default matrix takes a few minutes.

Exit status: 0 ok; 1 a workload check failed; 2 usage and setup errors; 130
interrupted (no figures).`, stderr)
	broker := fs.String("broker", "gochannel", "broker URL: gochannel, kafka (embedded), kafka://host:port[,host:port], amqp://user:pass@host:5672/")
	store := fs.String("store", "memory", "dedup store URL of the idempo variant: memory, redis://host:6379/0, postgres://…, mysql://…, sqlite, sqlite://PATH")
	events := fs.Int("events", bench.DefaultEvents, fmt.Sprintf("messages per round and variant (with --matrix the default is %d)", bench.DefaultMatrixEvents))
	rounds := fs.Int("rounds", bench.DefaultRounds, "rounds; each runs every variant once, in rotating order (0 with --memory: memory figures only)")
	warmup := fs.Int("warmup", bench.DefaultWarmup, "messages per variant of an unrecorded first round (0 for none; at most --events)")
	consumers := fs.Int("consumers", bench.DefaultConsumers, "router handlers per round (a consumer group on Kafka and RabbitMQ; one topic each on gochannel)")
	inFlight := fs.Int("in-flight", bench.DefaultInFlight, "on gochannel: messages in flight per consumer, handled concurrently by the router (Kafka and RabbitMQ consumers take one at a time; use --consumers)")
	asJSON := fs.Bool("json", false, "print exactly one JSON object on stdout")
	memory := fs.Bool("memory", false, "also measure what the store keeps per key (in-flight keys in memory; MEMORY USAGE in Redis; table size per row in SQL)")
	memoryKeys := fs.Int("memory-keys", bench.DefaultMemoryKeys, "in-flight keys claimed in the memory store for --memory (server stores write at most 10000)")
	matrix := fs.Bool("matrix", false, "run every --brokers × --stores combination and print one markdown table")
	brokers := fs.String("brokers", strings.Join(bench.MatrixBrokers, ","), "comma-separated brokers of --matrix")
	stores := fs.String("stores", strings.Join(bench.MatrixStores, ","), "comma-separated stores of --matrix")
	timeout := fs.Duration("timeout", bench.DefaultTimeout, "give up after this long (with --matrix: per combination)")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	// Zero means "the default" to package bench; on the command line it is
	// a mistake.
	for _, f := range []struct {
		name string
		v    int
	}{{"events", *events}, {"consumers", *consumers}, {"in-flight", *inFlight}, {"memory-keys", *memoryKeys}} {
		if f.v <= 0 {
			fmt.Fprintf(stderr, "idempo bench: --%s must be > 0, got %d\n", f.name, f.v)
			return 2
		}
	}
	if *rounds < 0 {
		fmt.Fprintf(stderr, "idempo bench: --rounds must be >= 0, got %d\n", *rounds)
		return 2
	}
	if *warmup < 0 {
		fmt.Fprintf(stderr, "idempo bench: --warmup must be >= 0, got %d\n", *warmup)
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *matrix && !set["events"] {
		*events = bench.DefaultMatrixEvents
	}
	opts := bench.Options{
		Broker: *broker, Store: *store, Events: *events, Rounds: *rounds, Warmup: min(*warmup, *events),
		Consumers: *consumers, InFlight: *inFlight, Memory: *memory, MemoryKeys: *memoryKeys, Timeout: *timeout,
		Stderr: stderr, Progress: isTerminal(stderr),
	}
	if *rounds == 0 {
		opts.Rounds = -1
	}
	if *warmup == 0 {
		opts.Warmup = -1
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "idempo bench: %v\n", err)
		if errors.Is(err, bench.ErrCheck) {
			return 1
		}
		return 2
	}
	if *matrix {
		if set["broker"] || set["store"] {
			fmt.Fprintln(stderr, "idempo bench: --matrix takes --brokers and --stores, not --broker and --store")
			return 2
		}
		res, err := bench.RunMatrix(ctx, bench.MatrixOptions{
			Options: opts, Brokers: splitList(*brokers), Stores: splitList(*stores),
			Command: commandLine(args),
		})
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(stderr, "bench", "before the matrix started, so there are no figures")
			}
			return fail(err)
		}
		if *asJSON {
			if err := json.NewEncoder(stdout).Encode(res); err != nil {
				return fail(err)
			}
		} else {
			// One write, so that the output's redactor sees every line whole.
			var buf bytes.Buffer
			res.Markdown(&buf)
			_, _ = stdout.Write(buf.Bytes())
		}
		if ctx.Err() != nil {
			return interrupted(stderr, "bench", "the combinations it did not finish are marked skipped")
		}
		if res.Failed() {
			fmt.Fprintln(stderr, "idempo bench: FAILED: a combination did not pass its workload check")
			return 1
		}
		return 0
	}
	rep, err := bench.Run(ctx, opts)
	if ctx.Err() != nil {
		return interrupted(stderr, "bench", "a run cut short measures nothing, so there are no figures")
	}
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return fail(err)
		}
		return 0
	}
	printReport(stdout, rep)
	return 0
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

func printReport(w io.Writer, r *bench.Report) {
	fmt.Fprintf(w, "idempo bench (run %s; broker %s; store %s)\n", r.RunID, r.Broker, r.Store)
	if r.Rounds > 0 {
		fmt.Fprintf(w, "%d events per round, %d rounds per variant (+ %d-message warm-up), %d consumer(s)\n\n",
			r.Events, r.Rounds, r.Warmup, r.Consumers)
		fmt.Fprintf(w, "  %-10s %12s %10s %10s %10s %11s %10s\n", "variant", "events/s", "ns/msg", "p50", "p99", "allocs/msg", "bytes/msg")
		for _, v := range []struct {
			name string
			res  bench.VariantResult
		}{{"bare", r.Variants.Bare}, {"watermill", r.Variants.Watermill}, {"idempo", r.Variants.Idempo}} {
			fmt.Fprintf(w, "  %-10s %12s %10s %10s %10s %11.1f %10s\n", v.name,
				bench.FormatCount(v.res.EventsPerSec), bench.FormatCount(v.res.NsPerMsg),
				bench.FormatUS(v.res.P50US), bench.FormatUS(v.res.P99US), v.res.AllocsPerMsg, bench.FormatCount(v.res.BytesPerMsg))
		}
		fmt.Fprintf(w, "\nidempo costs %.2f× bare and %.2f× watermill per message (cost = time per message).\n", r.RatioVsBare, r.RatioVsWatermill)
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
