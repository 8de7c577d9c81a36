package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/outbox"
)

// relayCommand is idempo relay.
type relayCommand struct {
	outboxDB
	broker      string
	name        string
	batch       int
	notify      bool
	poll, lease time.Duration
	maxAttempts int
	retention   time.Duration
	progress    time.Duration
}

func (*relayCommand) usage() (string, string, string) {
	return "relay", "idempo relay --db URL --broker URL [--table T] [--batch N] [--notify] [flags]", `
Publishes the committed rows of a transactional outbox (package outbox) to a
broker until Ctrl-C or SIGTERM, then releases its leases and exits 0. Run
as many as you like on one table: they share its key buckets through leases
(one relay publishes a key's rows at a time, in commit order), and a relay
that dies is replaced once its leases run out (--lease).

A row is marked sent only after the broker confirmed it; a crash in between
publishes it again with the same UUID, which the consumer's deduplication
absorbs. A row the broker refuses for good, or that failed --max-attempts
times, moves to the dead table ('idempo outbox dead').

Every --progress it prints one line on stderr: rows published since start,
pending and dead rows in the table, failed publishes.

Exit status: 0 stopped by a signal; 2 usage, setup, database or broker
errors.`
}

func (c *relayCommand) flags(fs *flag.FlagSet) {
	c.dbFlags(fs, 0)
	fs.StringVar(&c.broker, "broker", "", "broker URL to publish to: kafka://host:port[,host:port], amqp://user:pass@host:5672/ or nats://host:4222 (required)")
	fs.StringVar(&c.name, "name", "", "the relay's name in the lease rows (default hostname-pid)")
	fs.IntVar(&c.batch, "batch", outbox.DefaultBatchSize, "rows fetched, published and marked at a time")
	fs.BoolVar(&c.notify, "notify", false, "PostgreSQL: LISTEN for the writers' notifications (outbox.Options.Notify) and wake at once; polling goes on as a fallback")
	fs.DurationVar(&c.poll, "poll", outbox.DefaultPollInterval, "how often to look for new rows when idle")
	fs.DurationVar(&c.lease, "lease", outbox.DefaultLease, "bucket lease: a dead relay's keys are taken over after this long")
	fs.IntVar(&c.maxAttempts, "max-attempts", outbox.DefaultMaxAttempts, "failed publishes before a row moves to the dead table")
	fs.DurationVar(&c.retention, "retention", 0, "keep sent rows this long before deleting them (0: delete when sent)")
	fs.DurationVar(&c.progress, "progress", 10*time.Second, "print a progress line this often (0: never)")
	fs.BoolVar(&c.migrate, "migrate", false, "create the outbox tables if they are missing (with --buckets)")
}

func (c *relayCommand) Validate() error {
	if c.broker == "" {
		return errors.New("--broker required")
	}
	spec, err := backend.ParseBroker(c.broker)
	if err != nil {
		return err
	}
	switch {
	case spec.Kind == backend.GoChannel:
		return fmt.Errorf("--broker %q: a relay publishes to a real broker; give kafka://host:port, amqp://user:pass@host:5672/, nats://host:4222 or redis-stream://host:6379/0", c.broker)
	case spec.Embedded:
		return fmt.Errorf("--broker %q would start an empty in-process Kafka cluster that vanishes with the relay; give your cluster as kafka://host:port", c.broker)
	case c.batch < 1:
		return fmt.Errorf("--batch must be > 0, got %d", c.batch)
	case c.poll <= 0:
		return fmt.Errorf("--poll must be > 0, got %v", c.poll)
	case c.lease < outbox.MinLease:
		return fmt.Errorf("--lease must be at least %v, got %v", outbox.MinLease, c.lease)
	case c.maxAttempts < 1:
		return fmt.Errorf("--max-attempts must be > 0, got %d", c.maxAttempts)
	case c.retention < 0:
		return fmt.Errorf("--retention must be >= 0, got %v", c.retention)
	case c.progress < 0:
		return fmt.Errorf("--progress must be >= 0, got %v", c.progress)
	}
	return c.validateDB()
}

func (c *relayCommand) Run(ctx context.Context, e *env) (result, error) {
	spec, _ := backend.ParseBroker(c.broker) // validated
	broker, err := backend.OpenBroker(ctx, spec, nil)
	if err != nil {
		return nil, fmt.Errorf("open broker %s: %w", spec, err)
	}
	defer func() { _ = broker.Close() }()
	relay, err := outbox.NewRelay(e.outbox, outbox.RelayConfig{
		Publisher: broker.Publisher, Name: c.name, BatchSize: c.batch, PollInterval: c.poll,
		Lease: c.lease, Notify: c.notify, MaxAttempts: c.maxAttempts, Retention: c.retention,
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stderr, "idempo relay: broker: %s, db: %s, table %s\n", broker.Display, e.db.Display, e.outbox.Table())

	var wg sync.WaitGroup
	stopProgress := make(chan struct{})
	if c.progress > 0 {
		wg.Go(func() { c.printProgress(ctx, e, relay, stopProgress) })
	}
	err = relay.Run(ctx)
	close(stopProgress)
	wg.Wait()
	st := relay.Stats()
	if err != nil {
		return nil, fmt.Errorf("relay: %w (published %d rows before)", err, st.Published)
	}
	fmt.Fprintf(e.stderr, "idempo relay: stopped, leases released: published %d, failures %d, dead %d\n", st.Published, st.Failures, st.Dead)
	return nil, nil
}

// printProgress prints a progress line every c.progress until stop closes.
func (c *relayCommand) printProgress(ctx context.Context, e *env, relay *outbox.Relay, stop <-chan struct{}) {
	t := time.NewTicker(c.progress)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st := relay.Stats()
		line := fmt.Sprintf("idempo relay: published %d (+%d), failures %d, dead %d by this relay", st.Published, st.Published-last, st.Failures, st.Dead)
		last = st.Published
		sctx, cancel := context.WithTimeout(ctx, c.progress)
		sts, err := e.outbox.Status(sctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(e.stderr, "%s; table status: %v\n", line, err)
			}
			continue
		}
		var pending, dead int64
		var oldest time.Duration
		for _, s := range sts {
			pending += s.Pending
			dead += s.Dead
			oldest = max(oldest, s.OldestPending)
		}
		fmt.Fprintf(e.stderr, "%s; table: pending %d (oldest %s), dead %d\n", line, pending, fmtAge(float64(oldest.Microseconds())/1000), dead)
	}
}
