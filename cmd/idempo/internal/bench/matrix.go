package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
)

// The default axes of [RunMatrix]: the servers of the project's docker
// compose file.
var (
	MatrixBrokers = []string{"gochannel", "kafka", "amqp://guest:guest@127.0.0.1:5672/"}
	MatrixStores  = []string{"memory", "redis://127.0.0.1:6379/0", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "sqlite"}
)

// DefaultMatrixEvents is [MatrixOptions] Events' default: smaller than a
// single run's, since the matrix runs twelve of them.
const DefaultMatrixEvents = 5000

// MatrixOptions configures [RunMatrix].
type MatrixOptions struct {
	// Options apply to every combination; Broker, Store and RunID are
	// ignored (each combination has its own run ID), Events defaults to
	// [DefaultMatrixEvents] and Timeout bounds each combination.
	Options
	// Brokers and Stores are the axes. Default [MatrixBrokers] and
	// [MatrixStores].
	Brokers, Stores []string
	// Command is the command line, printed with the table.
	Command string
}

// MatrixRow is one broker × store combination. Exactly one of Skipped,
// Failed and Report is set.
type MatrixRow struct {
	Broker string `json:"broker"`
	Store  string `json:"store"`
	// Skipped says why the combination did not run (its server could not
	// be reached or opened).
	Skipped string `json:"skipped,omitempty"`
	// Failed is the error of a combination that ran but did not finish or
	// whose workload check failed.
	Failed string  `json:"failed,omitempty"`
	Report *Report `json:"report,omitempty"`
}

// MatrixResult is the outcome of [RunMatrix]. The JSON field names are
// stable.
type MatrixResult struct {
	Command   string  `json:"command"`
	Machine   Machine `json:"machine"`
	Events    int     `json:"events_per_round"`
	Rounds    int     `json:"rounds"`
	Warmup    int     `json:"warmup"`
	Consumers int     `json:"consumers"`
	// InFlight applies to GoChannel rows (see Options.InFlight).
	InFlight int         `json:"in_flight"`
	Rows     []MatrixRow `json:"rows"`
}

// Failed reports whether a combination failed (skipped ones do not count).
func (m *MatrixResult) Failed() bool {
	for _, r := range m.Rows {
		if r.Failed != "" {
			return true
		}
	}
	return false
}

// RunMatrix runs the benchmark for every broker × store combination, one
// after another, opening each broker once. Unreachable servers skip their
// combinations; failures of a combination are reported in its row. The
// error is for invalid options and URLs only.
func RunMatrix(ctx context.Context, mo MatrixOptions) (*MatrixResult, error) {
	if mo.Events == 0 {
		mo.Events = DefaultMatrixEvents
	}
	mo.Brokers = orDefault(mo.Brokers, MatrixBrokers)
	mo.Stores = orDefault(mo.Stores, MatrixStores)
	base := mo.Options
	base.RunID = "x"
	base.setDefaults()
	if err := base.Validate(); err != nil {
		return nil, err
	}
	var (
		bspecs []backend.Spec
		sspecs []backend.Spec
	)
	for _, b := range mo.Brokers {
		s, err := backend.ParseBroker(b)
		if err != nil {
			return nil, err
		}
		bspecs = append(bspecs, s)
	}
	for _, st := range mo.Stores {
		s, err := backend.ParseStore(st)
		if err != nil {
			return nil, err
		}
		sspecs = append(sspecs, s)
	}
	res := &MatrixResult{
		Command: mo.Command, Machine: CurrentMachine(),
		Events: base.Events, Rounds: max(base.Rounds, 0), Warmup: max(base.Warmup, 0), Consumers: base.Consumers,
		InFlight: base.InFlight,
	}
	// A cancelled run returns the rows measured so far.
	for i := 0; i < len(bspecs) && ctx.Err() == nil; i++ {
		res.Rows = append(res.Rows, matrixBroker(ctx, base, bspecs[i], sspecs)...)
	}
	return res, nil
}

func orDefault(v, def []string) []string {
	if len(v) == 0 {
		return def
	}
	return v
}

// matrixBroker runs every store on one broker.
func matrixBroker(ctx context.Context, base Options, bs backend.Spec, sspecs []backend.Spec) []MatrixRow {
	rows := make([]MatrixRow, len(sspecs))
	for i, ss := range sspecs {
		rows[i] = MatrixRow{Broker: label(bs), Store: label(ss)}
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	var bopts []backend.Option
	if base.ChildBroker {
		bopts = append(bopts, backend.InChildProcess())
	}
	broker, err := backend.OpenBroker(octx, bs, nil, bopts...)
	cancel()
	if err != nil {
		for i := range rows {
			rows[i].Skipped = fmt.Sprintf("broker: %v", err)
		}
		fmt.Fprintf(base.Stderr, "idempo bench: skipping broker %s: %v\n", bs, err)
		return rows
	}
	defer func() { _ = broker.Close() }()
	for i, ss := range sspecs {
		if ctx.Err() != nil {
			rows[i].Skipped = "interrupted"
			continue
		}
		o := base
		o.RunID = NewRunID()
		rep, skipped, err := runCombination(ctx, o, broker, ss)
		switch {
		case err != nil && ctx.Err() != nil:
			rows[i].Skipped = "interrupted"
		case skipped:
			rows[i].Skipped = err.Error()
			fmt.Fprintf(base.Stderr, "idempo bench: skipping %s × %s: %v\n", bs, ss, err)
		case err != nil:
			rows[i].Failed = err.Error()
			fmt.Fprintf(base.Stderr, "idempo bench: %s × %s FAILED: %v\n", bs, ss, err)
		default:
			rows[i].Report = rep
		}
	}
	return rows
}

// runCombination runs one store on an opened broker; skipped is true when
// the store could not be opened.
func runCombination(ctx context.Context, o Options, broker *backend.Broker, ss backend.Spec) (_ *Report, skipped bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	store, err := backend.OpenStore(ctx, ss, o.RunID)
	if err != nil {
		return nil, true, fmt.Errorf("store: %w", err)
	}
	defer func() { _ = store.Close() }()
	if store.Drop != nil {
		defer func() { _ = store.Drop(context.WithoutCancel(ctx)) }()
	}
	r, err := newRunner(ctx, o, broker, store)
	if err != nil {
		return nil, false, err
	}
	defer r.close(context.WithoutCancel(ctx))
	rep, err := r.run(ctx)
	return rep, false, err
}

// label names a broker or store in the table: the kind for embedded ones,
// the redacted URL otherwise.
func label(s backend.Spec) string {
	switch {
	case s.Kind == backend.Kafka && s.Embedded:
		return "kafka (embedded)"
	case s.Embedded:
		return string(s.Kind)
	default:
		return s.String()
	}
}

// Markdown writes the result as a markdown section: what ran where, one
// table, and the reasons of skipped and failed combinations.
func (m *MatrixResult) Markdown(w io.Writer) {
	bw := bufio.NewWriter(w)
	defer func() { _ = bw.Flush() }()
	fmt.Fprintf(bw, "Command: `%s`\n\n", m.Command)
	fmt.Fprintf(bw, "Machine: %s\n\n", m.Machine)
	fmt.Fprintf(bw, "Workload: %d events per round, %d rounds per variant in alternation (bare, watermill, idempo; the order rotates each round), "+
		"a %d-message warm-up per variant, %d consumer(s) (on gochannel %d message(s) in flight each; RabbitMQ consumers and Kafka in partition order take one at a time, Kafka in key order up to 64 per partition); a trivial handler. "+
		"events/s: consumption, first delivery to last ack (Kafka and RabbitMQ are filled before the router starts; on GoChannel the publisher runs alongside). "+
		"ratio = idempo's time per message over bare's and over watermill's (Retry + PoisonQueue + Deduplicator by UUID). "+
		"ratio_vs_sequential: idempo in the ordering shown against idempo in partition order, Kafka only. "+
		"p50/p99: handler start to ack. cpu: the benchmark process's CPU time per message (the embedded Kafka cluster runs in a child process).\n\n",
		m.Events, m.Rounds, m.Warmup, m.Consumers, m.InFlight)
	fmt.Fprintln(bw, "| broker | ordering | store | bare ev/s | watermill ev/s | idempo ev/s | ratio_vs_bare | ratio_vs_watermill | ratio_vs_sequential | idempo p50 / p99 | idempo cpu µs/msg |")
	fmt.Fprintln(bw, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	var notes, mem []string
	memSeen := map[string]bool{}
	for _, r := range m.Rows {
		if r.Report != nil && r.Report.Memory != nil && !memSeen[r.Store] {
			memSeen[r.Store] = true
			mm := r.Report.Memory
			mem = append(mem, fmt.Sprintf("- %s: %s bytes per %s key, %.1f MiB per 100k keys (%d keys; %s)",
				r.Store, FormatCount(mm.BytesPerKey), strings.ReplaceAll(mm.State, "_", "-"), mm.MiBPer100kKeys, mm.Keys, mm.Method))
		}
		switch {
		case r.Report != nil:
			v := r.Report.Variants
			ordering, seq := "—", "—"
			if strings.HasPrefix(r.Broker, "kafka") {
				ordering = r.Report.Ordering
			}
			if v.Sequential != nil {
				seq = fmt.Sprintf("%.2f", r.Report.RatioVsSequential)
			}
			fmt.Fprintf(bw, "| %s | %s | %s | %s | %s | %s | %.2f | %.2f | %s | %s / %s | %.1f |\n", r.Broker, ordering, r.Store,
				FormatCount(v.Bare.EventsPerSec), FormatCount(v.Watermill.EventsPerSec), FormatCount(v.Idempo.EventsPerSec),
				r.Report.RatioVsBare, r.Report.RatioVsWatermill, seq, FormatUS(v.Idempo.P50US), FormatUS(v.Idempo.P99US), v.Idempo.CPUUSPerMsg)
		case r.Skipped != "":
			fmt.Fprintf(bw, "| %s | — | %s | skipped | — | — | — | — | — | — | — |\n", r.Broker, r.Store)
			notes = append(notes, fmt.Sprintf("- %s × %s skipped: %s", r.Broker, r.Store, oneLine(r.Skipped)))
		default:
			fmt.Fprintf(bw, "| %s | — | %s | FAILED | — | — | — | — | — | — | — |\n", r.Broker, r.Store)
			notes = append(notes, fmt.Sprintf("- %s × %s failed: %s", r.Broker, r.Store, oneLine(r.Failed)))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(bw)
		for _, n := range notes {
			fmt.Fprintln(bw, n)
		}
	}
	if len(mem) > 0 {
		fmt.Fprintln(bw, "\nStore memory:")
		fmt.Fprintln(bw)
		for _, n := range mem {
			fmt.Fprintln(bw, n)
		}
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// FormatCount formats v rounded to an integer, with commas between groups
// of three digits: "123,456".
func FormatCount(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatUS formats a duration in microseconds: "850 µs", "12.3 ms".
func FormatUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2f s", us/1e6)
	case us >= 1e4:
		return fmt.Sprintf("%.0f ms", us/1e3)
	case us >= 1e3:
		return fmt.Sprintf("%.1f ms", us/1e3)
	case us >= 10:
		return fmt.Sprintf("%.0f µs", us)
	default:
		return fmt.Sprintf("%.1f µs", us)
	}
}

// Machine describes where a benchmark ran.
type Machine struct {
	NumCPU     int    `json:"num_cpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	GoVersion  string `json:"go_version"`
	// CPU is the processor model where the OS tells it (Linux).
	CPU string `json:"cpu,omitempty"`
	// Date is when the report was made, UTC, RFC 3339.
	Date string `json:"date"`
}

// CurrentMachine describes this process's machine now.
func CurrentMachine() Machine {
	return Machine{
		NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, GoVersion: runtime.Version(),
		CPU: cpuModel(), Date: time.Now().UTC().Format(time.RFC3339),
	}
}

// String is one line: "2 CPUs (GOMAXPROCS 2), linux/amd64, go1.26.8, <model>, <date>".
func (m Machine) String() string {
	s := fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s/%s, %s", m.NumCPU, m.GOMAXPROCS, m.GOOS, m.GOARCH, m.GoVersion)
	if m.CPU != "" {
		s += ", " + m.CPU
	}
	return s + ", " + m.Date
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
