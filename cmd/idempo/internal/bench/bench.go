package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
)

// Defaults of [Options].
const (
	DefaultEvents     = 20000
	DefaultRounds     = 3
	DefaultWarmup     = 1000
	DefaultConsumers  = 1
	DefaultInFlight   = 1
	DefaultMemoryKeys = 100000
	DefaultKeys       = 1000
	DefaultTimeout    = 10 * time.Minute
	// DefaultStall is how long a round may go without a single ack before
	// it fails.
	DefaultStall = time.Minute
)

// ErrCheck is matched by the error of a run whose workload did not hold:
// a message lost, handled twice, nacked or never acked. Such a run reports
// no figures.
var ErrCheck = errors.New("bench: workload check failed")

// Options configures [Run]. The zero value benchmarks GoChannel with the
// in-memory store.
type Options struct {
	// Broker and Store are the --broker and --store URLs (see package
	// backend). Default "gochannel" and "memory".
	Broker, Store string
	// Events is the number of messages of one round of one variant.
	// Defaults to 20000.
	Events int
	// Rounds is how many times each variant runs. Defaults to 3. The
	// special value -1 runs none (with Memory: the memory figures only).
	Rounds int
	// Warmup is the number of messages per variant of an unrecorded round
	// before the first. Defaults to min(Events, 1000). The special value -1
	// disables the warm-up.
	Warmup int
	// Consumers is the number of router handlers consuming one round. On
	// Kafka and RabbitMQ they share one topic (a consumer group, competing
	// consumers); on GoChannel, where every subscriber sees every message,
	// the round's messages are spread over as many topics, one handler
	// each. All share one dedup scope. On Kafka, consumers that join after
	// the first delivery make the group rebalance within the timed window.
	// Defaults to 1.
	Consumers int
	// InFlight is, on GoChannel, how many messages each consumer has in
	// flight: the publisher keeps that many ahead of the acks, and the
	// router handles them concurrently. 1 makes each consumer sequential,
	// as the Kafka and RabbitMQ subscribers of package broker are (they
	// hand out a message only after the previous one is acked); there
	// Consumers is the way to concurrency and InFlight is ignored.
	// Defaults to 1.
	InFlight int
	// Ordering is the --ordering of Kafka subscribers: "partition" (the
	// default), "key" or "unordered". With another than "partition" on
	// Kafka, a fourth variant, sequential (idempo in PartitionOrder), runs
	// in every round for [Report.RatioVsSequential].
	Ordering string
	// Partitions is the number of partitions of the embedded Kafka
	// cluster's topics. Defaults to 1.
	Partitions int
	// ChildBroker runs the embedded Kafka cluster in a child process (the
	// idempo binary's, see backend.InChildProcess), so that even the bare
	// variant reaches its broker over a socket and the process's CPU time
	// is the client's alone. The CLI sets it; the default (false) runs the
	// cluster in this process.
	ChildBroker bool
	// Keys is how many record keys the messages are spread over (message i
	// has key i mod Keys). Defaults to 1000.
	Keys int
	// Work is how long the handler spends on each message (a sleep, as for
	// an I/O call). Defaults to 0.
	Work time.Duration
	// Inbox (SQL stores) runs the transactional inbox against its
	// baseline instead of the usual variants: the handler makes one
	// business INSERT through sqlstore.TxFromContext under idempo's stack
	// with middleware.Config.Transactional, and the baseline ([NoInbox])
	// runs the same INSERT in a transaction of its own per message, without
	// dedup, on the same broker, ordering and connection pool
	// ([Report.RatioVsNoInbox]). The business table is the run's own.
	Inbox bool
	// Memory adds the store's memory figures ([Report.Memory]).
	Memory bool
	// MemoryKeys is how many in-flight keys the in-memory store is filled
	// with for its memory figure. Server stores write at most 10000 done
	// records (SQL) or 1000 (Redis). Defaults to 100000.
	MemoryKeys int
	// Timeout bounds the whole run. Defaults to 10 minutes.
	Timeout time.Duration
	// Stall fails a round that goes this long without an ack. Defaults to
	// one minute.
	Stall time.Duration
	// Stderr receives the start line and progress. Defaults to io.Discard.
	Stderr io.Writer
	// Progress shows a progress line on Stderr (for a terminal).
	Progress bool
	// RunID names this run's topics, queues, keys and tables. Defaults to
	// 8 random hex characters.
	RunID string
}

func (o *Options) setDefaults() {
	if o.Events == 0 {
		o.Events = DefaultEvents
	}
	if o.Rounds == 0 {
		o.Rounds = DefaultRounds
	}
	if o.Warmup == 0 {
		o.Warmup = min(o.Events, DefaultWarmup)
	}
	if o.Consumers == 0 {
		o.Consumers = DefaultConsumers
	}
	if o.InFlight == 0 {
		o.InFlight = DefaultInFlight
	}
	if o.Ordering == "" {
		o.Ordering = "partition"
	}
	if o.Partitions == 0 {
		o.Partitions = 1
	}
	if o.Keys == 0 {
		o.Keys = DefaultKeys
	}
	if o.MemoryKeys == 0 {
		o.MemoryKeys = DefaultMemoryKeys
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Stall == 0 {
		o.Stall = DefaultStall
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.RunID == "" {
		o.RunID = NewRunID()
	}
}

// Validate reports the first invalid field, naming its flag.
func (o Options) Validate() error {
	switch {
	case o.Events < 1:
		return fmt.Errorf("--events must be > 0, got %d", o.Events)
	case o.Rounds < 1 && o.Rounds != -1:
		return fmt.Errorf("--rounds must be > 0, got %d", o.Rounds)
	case o.Rounds == -1 && !o.Memory:
		return errors.New("--rounds 0 measures nothing without --memory")
	case backend.Orderings[o.Ordering] == 0 && o.Ordering != "partition":
		return fmt.Errorf("--ordering %q is not partition, key or unordered", o.Ordering)
	case o.Warmup < -1:
		return fmt.Errorf("--warmup must be >= 0, got %d", o.Warmup)
	case o.Consumers < 1:
		return fmt.Errorf("--consumers must be > 0, got %d", o.Consumers)
	case o.InFlight < 1:
		return fmt.Errorf("--in-flight must be > 0, got %d", o.InFlight)
	case o.Partitions < 1:
		return fmt.Errorf("--partitions must be > 0, got %d", o.Partitions)
	case o.Keys < 1:
		return fmt.Errorf("--keys must be > 0, got %d", o.Keys)
	case o.Work < 0:
		return fmt.Errorf("--work must be >= 0, got %v", o.Work)
	case o.MemoryKeys < 1:
		return fmt.Errorf("--memory-keys must be > 0, got %d", o.MemoryKeys)
	}
	return nil
}

// NewRunID returns a fresh run ID (8 hex characters).
func NewRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Report is the outcome of [Run]. The JSON field names are stable.
type Report struct {
	RunID     string `json:"run_id"`
	Broker    string `json:"broker"`
	Store     string `json:"store"`
	Events    int    `json:"events_per_round"`
	Rounds    int    `json:"rounds"`
	Warmup    int    `json:"warmup"`
	Consumers int    `json:"consumers"`
	// InFlight is Options.InFlight on GoChannel, 0 elsewhere.
	InFlight int `json:"in_flight"`
	// Ordering, Partitions, Keys and WorkMS are the options of the run.
	Ordering   string  `json:"ordering"`
	Partitions int     `json:"partitions"`
	Keys       int     `json:"keys"`
	WorkMS     float64 `json:"work_ms"`
	// Variants holds the figures of each variant (empty with Rounds -1).
	Variants Variants `json:"variants"`
	// FloorEventsPerSec is go-redis alone on Redis: the store's own claim
	// and complete scripts (EVALSHA, the store's arguments) for fresh keys,
	// as many in flight as the idempo variant had at its peak, pipelined
	// over one connection per CPU, without the store's code, a broker or a
	// router: the best any client reaches with these scripts. It runs
	// Events messages in every round, after the variants; this is their
	// total over their total time. 0 for other stores.
	FloorEventsPerSec float64 `json:"floor_events_per_s,omitempty"`
	// RatioVsFloor is idempo's events/s divided by FloorEventsPerSec: the
	// share of the scripts' best the whole stack reaches.
	RatioVsFloor float64 `json:"ratio_vs_floor,omitempty"`
	// RatioVsBare is idempo's time per message divided by bare's.
	RatioVsBare float64 `json:"ratio_vs_bare"`
	// RatioVsWatermill is idempo's time per message divided by Watermill's
	// Retry+PoisonQueue+Deduplicator's.
	RatioVsWatermill float64 `json:"ratio_vs_watermill"`
	// RatioVsSequential is the sequential variant's time per message (idempo
	// in PartitionOrder) divided by idempo's in the chosen ordering: how
	// many times faster the ordering is. 1 with ordering "partition".
	RatioVsSequential float64 `json:"ratio_vs_sequential"`
	// RatioVsNoInbox (with Options.Inbox) is the NoInbox variant's time per
	// message divided by idempo's: the share of the bare business
	// transaction's throughput the transactional inbox keeps.
	RatioVsNoInbox float64 `json:"ratio_vs_no_inbox,omitempty"`
	// Memory holds the store's memory figures (with Options.Memory).
	Memory  *MemoryResult `json:"memory,omitempty"`
	Machine Machine       `json:"machine"`
}

// Variants holds one result per variant.
type Variants struct {
	Bare      VariantResult `json:"bare"`      // zero with Options.Inbox
	Watermill VariantResult `json:"watermill"` // zero with Options.Inbox
	Idempo    VariantResult `json:"idempo"`
	// Sequential is idempo in PartitionOrder, run only when the chosen
	// ordering is another on Kafka.
	Sequential *VariantResult `json:"sequential,omitempty"`
	// NoInbox is the business transaction without dedup, run only with
	// Options.Inbox (which runs neither bare nor watermill).
	NoInbox *VariantResult `json:"no_inbox,omitempty"`
}

func (v *Variants) of(k Variant) *VariantResult {
	switch k {
	case Bare:
		return &v.Bare
	case Watermill:
		return &v.Watermill
	case Sequential:
		if v.Sequential == nil {
			v.Sequential = &VariantResult{}
		}
		return v.Sequential
	case NoInbox:
		if v.NoInbox == nil {
			v.NoInbox = &VariantResult{}
		}
		return v.NoInbox
	default:
		return &v.Idempo
	}
}

// VariantResult is what one variant did over all its recorded rounds.
type VariantResult struct {
	// Messages is the number of messages handled in recorded rounds.
	Messages int `json:"messages"`
	// Redeliveries counts acks beyond one per message: deliveries the
	// broker repeated, acked without a second effect by the deduplicating
	// variants (a second effect fails the run).
	Redeliveries int64 `json:"redeliveries"`
	// LeaseLost counts claims of the idempo variants whose lease ran out
	// before they settled: more claims at once than the store serves in a
	// lease. It should be 0 (see middleware.Config.MaxClaims); always 0
	// for the variants without a stack.
	LeaseLost int64 `json:"lease_lost"`
	// PeakInFlight is the most messages in the handler chain at once.
	PeakInFlight int `json:"peak_in_flight"`
	// ElapsedMS is the sum of the rounds' consumption times.
	ElapsedMS float64 `json:"elapsed_ms"`
	// EventsPerSec is Messages / elapsed.
	EventsPerSec float64 `json:"events_per_s"`
	// NsPerMsg is the cost: elapsed / Messages.
	NsPerMsg float64 `json:"ns_per_msg"`
	// P50US, P99US and MaxUS are handler-to-ack latencies over all recorded
	// messages, in microseconds.
	P50US float64 `json:"p50_us"`
	P99US float64 `json:"p99_us"`
	MaxUS float64 `json:"max_us"`
	// AllocsPerMsg and BytesPerMsg are the process's heap allocations
	// during the rounds per message (broker client and router included).
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	BytesPerMsg  float64 `json:"bytes_per_msg"`
	// CPUUSPerMsg is the process's CPU time (user and system) during the
	// rounds per message, in microseconds: the broker client, router and
	// stack, plus the broker itself when it runs in this process (GoChannel,
	// or the embedded cluster without Options.ChildBroker). 0 where the
	// platform does not report it.
	CPUUSPerMsg float64 `json:"cpu_us_per_msg"`
	// StoreServerUSPerMsg is the store server's CPU time running commands
	// per message, in microseconds (Redis: INFO commandstats, every client's
	// commands during the rounds); 0 for stores that do not report it.
	StoreServerUSPerMsg float64 `json:"store_server_us_per_msg"`
	// ClaimRowsPerStatement and CompleteRowsPerStatement are the mean batch
	// sizes of the SQL store's statements during the rounds: the rows of
	// each claim INSERT and of each completion UPDATE (1 when no two
	// handlers shared one; see sqlstore.Store.SharingStats). 0 for other
	// stores and for the variants that do not use the store.
	ClaimRowsPerStatement    float64 `json:"claim_rows_per_statement,omitempty"`
	CompleteRowsPerStatement float64 `json:"complete_rows_per_statement,omitempty"`
	// CallsPerRoundTrip is the mean batch size of the Redis store's round
	// trips during the rounds: the script calls of each pipeline (1 when no
	// two handlers shared one; see redisstore.Store.SharingStats). 0 for
	// other stores and for the variants that do not use the store.
	CallsPerRoundTrip float64 `json:"calls_per_round_trip,omitempty"`
	// Rounds has the figures of each recorded round, in order.
	Rounds []RoundResult `json:"rounds"`
}

// RoundResult is one round of one variant.
type RoundResult struct {
	Round        int     `json:"round"`
	Messages     int     `json:"messages"`
	ElapsedMS    float64 `json:"elapsed_ms"`
	EventsPerSec float64 `json:"events_per_s"`
	AllocsPerMsg float64 `json:"allocs_per_msg"`
}

// Run opens the broker and store the options name, runs the benchmark and
// returns its report. Errors matching [backend.ErrURL] are bad URLs; errors
// matching [ErrCheck] mean the workload did not hold; any other error is a
// setup failure (e.g. an unreachable server).
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	bspec, err := backend.ParseBroker(opts.Broker)
	if err != nil {
		return nil, err
	}
	sspec, err := backend.ParseStore(opts.Store)
	if err != nil {
		return nil, err
	}
	if opts.Inbox && sspec.Kind != backend.Postgres && sspec.Kind != backend.MySQL && sspec.Kind != backend.SQLite {
		return nil, fmt.Errorf("--inbox needs a SQL store (postgres, mysql or sqlite), got %s", sspec)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	bopts := []backend.Option{backend.WithPartitions(opts.Partitions)}
	if opts.ChildBroker {
		bopts = append(bopts, backend.InChildProcess())
	}
	broker, err := backend.OpenBroker(ctx, bspec, nil, bopts...)
	if err != nil {
		return nil, fmt.Errorf("open broker %s: %w", bspec, err)
	}
	defer func() { _ = broker.Close() }()
	return runOnBroker(ctx, opts, broker, sspec)
}

// runOnBroker opens the store and runs the benchmark on an opened broker.
func runOnBroker(ctx context.Context, opts Options, broker *backend.Broker, sspec backend.Spec) (*Report, error) {
	store, err := backend.OpenStore(ctx, sspec, opts.RunID)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", sspec, err)
	}
	defer func() { _ = store.Close() }()
	if store.Drop != nil {
		defer func() { _ = store.Drop(context.WithoutCancel(ctx)) }()
	}
	r, err := newRunner(ctx, opts, broker, store)
	if err != nil {
		return nil, err
	}
	defer r.close(context.WithoutCancel(ctx))
	return r.run(ctx)
}
