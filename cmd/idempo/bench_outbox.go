package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/bench"
	"github.com/idempo/idempo/outbox"
)

// outboxBenchFlags are the flags of idempo bench --outbox.
type outboxBenchFlags struct {
	on                      bool
	db                      string
	batch, payload, writers int
	idleMessages            int
	notify                  bool
	idlePause, halfRateFor  time.Duration
	poll                    time.Duration
	cpuProfile              string
}

func (c *benchCommand) outboxFlags(fs *flag.FlagSet) {
	f := &c.ob
	fs.BoolVar(&f.on, "outbox", false, "measure the transactional outbox instead: one relay draining a pre-filled table against --broker's publisher publishing the same --events messages from memory (ratio_vs_direct_publish), commit-to-publish latency idle and at half the drain rate, and the statements of one Write")
	fs.StringVar(&f.db, "db", "", "with --outbox: the outbox's database, postgres://…, mysql://… or sqlite://PATH (default: a SQLite file of the run)")
	fs.IntVar(&f.batch, "batch", outbox.DefaultBatchSize, "with --outbox: the relay's batch, and messages per Publish call when publishing directly")
	fs.IntVar(&f.payload, "payload", bench.DefaultPayloadBytes, "with --outbox: payload bytes per message")
	fs.BoolVar(&f.notify, "notify", false, "with --outbox on PostgreSQL: writers NOTIFY and the relay LISTENs")
	fs.IntVar(&f.idleMessages, "idle-messages", bench.DefaultIdleMessages, "with --outbox: messages of the idle latency phase, one writer, one per transaction")
	fs.DurationVar(&f.idlePause, "idle-pause", bench.DefaultIdlePause, "with --outbox: the idle writer's mean pause between commits (each drawn from half to one and a half times it)")
	fs.IntVar(&f.writers, "writers", bench.DefaultOutboxWriters, "with --outbox: writers of the half-rate latency phase")
	fs.DurationVar(&f.halfRateFor, "half-rate-for", bench.DefaultHalfRateDuration, "with --outbox: how long the half-rate writers write (at most 20000 messages)")
	fs.DurationVar(&f.poll, "poll", outbox.DefaultPollInterval, "with --outbox: the relay's poll interval")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "with --outbox: write a CPU profile of the whole run (relay, writers, publisher client) to this `FILE`")
}

// outboxOnly are the flags of the stack's benchmark that --outbox does not take.
var outboxOnly = []string{"db", "batch", "payload", "notify", "idle-messages", "idle-pause", "writers", "half-rate-for", "poll", "cpuprofile"}

func (c *benchCommand) validateOutbox() error {
	var wrong []string
	c.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "store", "matrix", "brokers", "stores", "memory", "memory-keys", "ordering", "partitions", "consumers", "in-flight", "work", "warmup":
			wrong = append(wrong, "--"+fl.Name)
		}
	})
	if len(wrong) > 0 {
		return fmt.Errorf("--outbox does not take %s (its database is --db)", strings.Join(wrong, ", "))
	}
	for _, fl := range []struct {
		name string
		v    int
	}{{"events", c.o.Events}, {"rounds", c.rounds}, {"keys", c.o.Keys}, {"batch", c.ob.batch}, {"payload", c.ob.payload}, {"idle-messages", c.ob.idleMessages}, {"writers", c.ob.writers}} {
		if fl.v <= 0 {
			return fmt.Errorf("--%s must be > 0, got %d", fl.name, fl.v)
		}
	}
	if c.ob.idlePause < 0 {
		return fmt.Errorf("--idle-pause must be >= 0, got %v", c.ob.idlePause)
	}
	if c.ob.halfRateFor <= 0 {
		return fmt.Errorf("--half-rate-for must be > 0, got %v", c.ob.halfRateFor)
	}
	if c.ob.poll <= 0 {
		return fmt.Errorf("--poll must be > 0, got %v", c.ob.poll)
	}
	return nil
}

// checkOutboxFlags refuses the --outbox flags without --outbox.
func (c *benchCommand) checkOutboxFlags() error {
	var wrong []string
	c.fs.Visit(func(fl *flag.Flag) {
		for _, n := range outboxOnly {
			if fl.Name == n {
				wrong = append(wrong, "--"+n)
			}
		}
	})
	if len(wrong) > 0 {
		return fmt.Errorf("%s need --outbox", strings.Join(wrong, ", "))
	}
	return nil
}

func (c *benchCommand) runOutbox(ctx context.Context, e *env) (result, error) {
	if c.ob.cpuProfile != "" {
		f, err := os.Create(c.ob.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.RunOutbox(ctx, bench.OutboxOptions{
		PollInterval: c.ob.poll,
		DB:           c.ob.db, Broker: c.o.Broker, Messages: c.o.Events, Rounds: c.rounds, BatchSize: c.ob.batch,
		Keys: c.o.Keys, PayloadBytes: c.ob.payload, Notify: c.ob.notify, IdleMessages: c.ob.idleMessages,
		IdlePause: c.ob.idlePause, Writers: c.ob.writers, HalfRateDuration: c.ob.halfRateFor,
		ChildBroker: true, Timeout: c.o.Timeout, Stderr: e.stderr,
	})
	if ctx.Err() != nil {
		return nil, interrupted("a run cut short measures nothing, so there are no figures")
	}
	if err != nil {
		return nil, checkFailed(err)
	}
	return outboxReport{rep}, nil
}

// outboxReport is the result of idempo bench --outbox.
type outboxReport struct{ *bench.OutboxReport }

func (r outboxReport) MarshalJSON() ([]byte, error) { return json.Marshal(r.OutboxReport) }

func (r outboxReport) text(w io.Writer) {
	rep := r.OutboxReport
	var b strings.Builder
	notify := "off"
	if rep.Notify {
		notify = "on"
	}
	fmt.Fprintf(&b, "idempo bench --outbox (run %s; broker %s; db %s)\n", rep.RunID, rep.Broker, rep.DB)
	fmt.Fprintf(&b, "%d messages per round, %d rounds, batch %d, %d keys, %d-byte payloads, poll %v, notify %s\n\n",
		rep.Messages, rep.Rounds, rep.BatchSize, rep.Keys, rep.PayloadBytes, time.Duration(rep.PollMS*float64(time.Millisecond)), notify)
	fmt.Fprintf(&b, "  %-34s %10s\n", "drain", "msgs/s")
	fmt.Fprintf(&b, "  %-34s %10s\n", "publisher alone, from memory", bench.FormatCount(rep.DirectPerSec))
	fmt.Fprintf(&b, "  %-34s %10s\n", "one relay, pre-filled table", bench.FormatCount(rep.RelayPerSec))
	fmt.Fprintf(&b, "the relay reaches %.2f of direct publishing (ratio_vs_direct_publish)\n\n", rep.RatioVsDirectPublish)
	fmt.Fprintf(&b, "  %-34s %9s %9s %9s %18s\n", "commit-to-publish", "p50", "p99", "max", "msgs/s (asked)")
	for _, l := range []struct {
		name string
		res  bench.LatencyResult
	}{
		{"idle (1 writer, pauses)", rep.Idle},
		{fmt.Sprintf("half the drain rate (%d writers)", rep.HalfRate.Writers), rep.HalfRate},
	} {
		asked := "-"
		if l.res.TargetPerSec > 0 {
			asked = bench.FormatCount(l.res.TargetPerSec)
		}
		fmt.Fprintf(&b, "  %-34s %6.2f ms %6.2f ms %6.2f ms %9s (%s)\n", l.name, l.res.P50MS, l.res.P99MS, l.res.MaxMS,
			bench.FormatCount(l.res.AchievedPerSec), asked)
	}
	s := rep.Statements
	fmt.Fprintf(&b, "\nWrite sends %d statements for 1 message and %d for %d messages over %d keys (%d INSERT into the outbox table).\n",
		s.One, s.Many, s.ManyMessages, s.ManyKeys, s.InsertsMany)
	fmt.Fprintf(&b, "machine: %s\n", rep.Machine)
	_, _ = io.WriteString(w, b.String())
}
