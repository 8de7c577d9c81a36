package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/outbox"
)

// Defaults of [OutboxOptions].
const (
	DefaultOutboxMessages = 20000
	DefaultIdleMessages   = 200
	DefaultIdlePause      = 100 * time.Millisecond
	DefaultOutboxWriters  = 8
	DefaultPayloadBytes   = 200
	// DefaultHalfRateDuration is how long the writers of the half-rate
	// phase write.
	DefaultHalfRateDuration = 5 * time.Second
	// maxHalfRateMessages bounds the half-rate phase when the drain rate is high.
	maxHalfRateMessages = 20000
	// statementMessages is the size of the Write whose statements are counted.
	statementMessages = 100
)

// OutboxOptions configures [RunOutbox]: `idempo bench --outbox`.
type OutboxOptions struct {
	// DB is the --db URL (see backend.ParseDB). Default "": a SQLite file of
	// the run in the cache directory, removed at the end.
	DB string
	// Broker is the --broker URL, as for [Options]. Default "gochannel".
	Broker string
	// Messages is how many messages one drain round publishes, directly and
	// through the relay. Defaults to [DefaultOutboxMessages].
	Messages int
	// Rounds is how many drain rounds run, each publishing directly and
	// through the relay, in alternating order. Defaults to 3.
	Rounds int
	// BatchSize is the relay's batch and the direct publisher's messages per
	// Publish call. Defaults to outbox.DefaultBatchSize.
	BatchSize int
	// Keys is how many ordering keys the messages are spread over (message
	// i has key i mod Keys). Defaults to [DefaultKeys].
	Keys int
	// PayloadBytes is each message's payload size. Defaults to
	// [DefaultPayloadBytes].
	PayloadBytes int
	// Notify turns on PostgreSQL's LISTEN/NOTIFY wake-up (writers notify,
	// the relay listens). Ignored elsewhere.
	Notify bool
	// PollInterval is the relay's. Defaults to outbox.DefaultPollInterval.
	PollInterval time.Duration
	// IdleMessages is how many messages the idle latency phase commits, one
	// per transaction, with a pause drawn uniformly from [IdlePause/2,
	// 3·IdlePause/2) between them, so that commits fall at every phase of
	// the relay's poll (a fixed pause shorter than the relay's cycle would
	// lock onto it). Defaults to [DefaultIdleMessages] and [DefaultIdlePause].
	IdleMessages int
	IdlePause    time.Duration
	// Writers is the number of writers of the half-rate phase, together
	// committing half the relay's measured drain rate, one message per
	// transaction, for HalfRateDuration. Defaults to [DefaultOutboxWriters]
	// and [DefaultHalfRateDuration].
	Writers          int
	HalfRateDuration time.Duration
	// ChildBroker runs the embedded Kafka cluster in a child process (see
	// [Options.ChildBroker]).
	ChildBroker bool
	// Timeout bounds the whole run. Defaults to [DefaultTimeout].
	Timeout time.Duration
	// Stderr receives the start line. Defaults to io.Discard.
	Stderr io.Writer
	// RunID names the run's table and topics. Defaults to [NewRunID].
	RunID string
}

func (o *OutboxOptions) setDefaults() {
	o.Messages = cmpOr(o.Messages, DefaultOutboxMessages)
	o.Rounds = cmpOr(o.Rounds, DefaultRounds)
	o.BatchSize = cmpOr(o.BatchSize, outbox.DefaultBatchSize)
	o.PollInterval = cmpOr(o.PollInterval, outbox.DefaultPollInterval)
	o.Keys = cmpOr(o.Keys, DefaultKeys)
	o.PayloadBytes = cmpOr(o.PayloadBytes, DefaultPayloadBytes)
	o.IdleMessages = cmpOr(o.IdleMessages, DefaultIdleMessages)
	o.IdlePause = cmpOr(o.IdlePause, DefaultIdlePause)
	o.Writers = cmpOr(o.Writers, DefaultOutboxWriters)
	o.HalfRateDuration = cmpOr(o.HalfRateDuration, DefaultHalfRateDuration)
	o.Timeout = cmpOr(o.Timeout, DefaultTimeout)
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.RunID == "" {
		o.RunID = NewRunID()
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Validate reports the first invalid field, naming its flag.
func (o OutboxOptions) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"events", o.Messages}, {"rounds", o.Rounds}, {"batch", o.BatchSize}, {"keys", o.Keys}, {"payload", o.PayloadBytes}, {"idle-messages", o.IdleMessages}, {"writers", o.Writers}} {
		if f.v < 1 {
			return fmt.Errorf("--%s must be > 0, got %d", f.name, f.v)
		}
	}
	if o.PollInterval < 0 {
		return fmt.Errorf("--poll must be > 0, got %v", o.PollInterval)
	}
	if o.IdlePause < 0 {
		return fmt.Errorf("--idle-pause must be >= 0, got %v", o.IdlePause)
	}
	if o.HalfRateDuration <= 0 {
		return fmt.Errorf("--half-rate-for must be > 0, got %v", o.HalfRateDuration)
	}
	return nil
}

// OutboxReport is the outcome of [RunOutbox]. The JSON field names are stable.
type OutboxReport struct {
	RunID        string `json:"run_id"`
	Broker       string `json:"broker"`
	DB           string `json:"db"`
	Messages     int    `json:"messages_per_round"`
	Rounds       int    `json:"rounds"`
	BatchSize    int    `json:"batch_size"`
	Keys         int    `json:"keys"`
	PayloadBytes int    `json:"payload_bytes"`
	Notify       bool   `json:"notify"`
	// PollMS is the relay's poll interval.
	PollMS float64 `json:"poll_ms"`
	// DirectPerSec is the publisher alone: the same messages published
	// from memory, BatchSize per Publish call, over all rounds.
	DirectPerSec float64 `json:"direct_msgs_per_s"`
	// RelayPerSec is one relay draining the pre-filled table (published and
	// marked), over all rounds.
	RelayPerSec float64 `json:"relay_msgs_per_s"`
	// RatioVsDirectPublish is RelayPerSec / DirectPerSec.
	RatioVsDirectPublish float64 `json:"ratio_vs_direct_publish"`
	// DrainRounds has the figures of each round.
	DrainRounds []DrainRound `json:"drain_rounds"`
	// Idle is commit-to-publish latency of one writer committing one
	// message at a time, with pauses.
	Idle LatencyResult `json:"idle"`
	// HalfRate is commit-to-publish latency while writers commit half of
	// RelayPerSec.
	HalfRate LatencyResult `json:"half_rate"`
	// Statements counts what one Write sends inside its transaction.
	Statements StatementCount `json:"statements"`
	Machine    Machine        `json:"machine"`
}

// DrainRound is one round: the same messages published directly and
// drained by a relay.
type DrainRound struct {
	Round        int     `json:"round"`
	DirectMS     float64 `json:"direct_ms"`
	RelayMS      float64 `json:"relay_ms"`
	DirectPerSec float64 `json:"direct_msgs_per_s"`
	RelayPerSec  float64 `json:"relay_msgs_per_s"`
}

// LatencyResult is commit-to-publish latency: from the call to the
// writer's Commit until the relay's Publish of that message returned.
type LatencyResult struct {
	Messages int `json:"messages"`
	Writers  int `json:"writers"`
	// TargetPerSec is the commit rate asked for (0 for idle); AchievedPerSec
	// what the writers committed.
	TargetPerSec   float64 `json:"target_msgs_per_s"`
	AchievedPerSec float64 `json:"achieved_msgs_per_s"`
	P50MS          float64 `json:"p50_ms"`
	P99MS          float64 `json:"p99_ms"`
	MaxMS          float64 `json:"max_ms"`
}

// StatementCount is what Write sends to the database inside the caller's
// transaction, counted at the driver (BEGIN and COMMIT excluded).
type StatementCount struct {
	// One is the statements of a Write of one message; Many of a Write of
	// ManyMessages messages over ManyKeys keys.
	One          int `json:"one_message"`
	Many         int `json:"many_messages"`
	ManyMessages int `json:"many_messages_n"`
	ManyKeys     int `json:"many_messages_keys"`
	// InsertsMany is how many of Many insert into the outbox table (an
	// INSERT, or a statement holding one, such as PostgreSQL's WITH … INSERT).
	InsertsMany int `json:"inserts_many_messages"`
	// StatementsMany lists them, in order.
	StatementsMany []string `json:"statements_many_messages"`
}

// RunOutbox measures the outbox: one relay draining a pre-filled table
// against the same publisher publishing the same messages from memory,
// commit-to-publish latency idle and at half the drain rate, and the
// statements of one Write. Errors matching [ErrCheck] mean a message was
// not published.
func RunOutbox(ctx context.Context, opts OutboxOptions) (*OutboxReport, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	bspec, err := backend.ParseBroker(opts.Broker)
	if err != nil {
		return nil, err
	}
	dspec := backend.Spec{Kind: backend.SQLite, Embedded: true}
	if opts.DB != "" {
		if dspec, err = backend.ParseDB(opts.DB); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	var bopts []backend.Option
	if opts.ChildBroker {
		bopts = append(bopts, backend.InChildProcess())
	}
	broker, err := backend.OpenBroker(ctx, bspec, nil, bopts...)
	if err != nil {
		return nil, fmt.Errorf("open broker %s: %w", bspec, err)
	}
	defer func() { _ = broker.Close() }()
	db, err := backend.OpenDB(ctx, dspec, opts.RunID)
	if err != nil {
		return nil, fmt.Errorf("open db %s: %w", dspec, err)
	}
	defer func() { _ = db.DB.Close() }()
	table := "idempo_outbox_bench_" + opts.RunID
	ob, err := outbox.New(db.DB, &outbox.Options{Table: table, Dialect: db.Dialect, Notify: opts.Notify})
	if err != nil {
		return nil, err
	}
	if err := ob.Migrate(ctx); err != nil {
		return nil, err
	}
	defer dropOutbox(context.WithoutCancel(ctx), db, dspec, table)
	fmt.Fprintf(opts.Stderr, "idempo bench: broker: %s, db: %s, table %s\n", broker.Display, db.Display, table)

	b := &outboxBench{opts: opts, ob: ob, db: db, pub: &timedPublisher{inner: broker.Publisher}}
	rep := &OutboxReport{
		RunID: opts.RunID, Broker: broker.Display, DB: db.Display, Messages: opts.Messages, Rounds: opts.Rounds,
		BatchSize: opts.BatchSize, Keys: opts.Keys, PayloadBytes: opts.PayloadBytes, Notify: opts.Notify,
		PollMS: ms(opts.PollInterval),
	}
	if rep.Statements, err = b.countStatements(ctx, dspec, table); err != nil {
		return nil, fmt.Errorf("count statements: %w", err)
	}
	var direct, relayed time.Duration
	for r := range opts.Rounds {
		dr, err := b.drainRound(ctx, r)
		if err != nil {
			return nil, err
		}
		rep.DrainRounds = append(rep.DrainRounds, dr)
		direct += time.Duration(dr.DirectMS * float64(time.Millisecond))
		relayed += time.Duration(dr.RelayMS * float64(time.Millisecond))
	}
	n := float64(opts.Messages * opts.Rounds)
	rep.DirectPerSec = round3(n / direct.Seconds())
	rep.RelayPerSec = round3(n / relayed.Seconds())
	rep.RatioVsDirectPublish = ratio(rep.RelayPerSec, rep.DirectPerSec)
	if rep.Idle, err = b.latency(ctx, "idle", 1, 0); err != nil {
		return nil, err
	}
	if rep.HalfRate, err = b.latency(ctx, "half", opts.Writers, rep.RelayPerSec/2); err != nil {
		return nil, err
	}
	rep.Machine = CurrentMachine()
	return rep, nil
}

// dropOutbox removes the run's tables, or its SQLite file.
func dropOutbox(ctx context.Context, db *backend.DB, spec backend.Spec, table string) {
	if spec.Embedded {
		_ = db.DB.Close()
		path := strings.TrimPrefix(db.Display, "sqlite://")
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Remove(path + suffix)
		}
		return
	}
	for _, suffix := range []string{"", "_leases", "_dead", "_keys"} {
		_, _ = db.DB.ExecContext(ctx, "DROP TABLE IF EXISTS "+table+suffix)
	}
}

type outboxBench struct {
	opts OutboxOptions
	ob   *outbox.Outbox
	db   *backend.DB
	pub  *timedPublisher
}

// messages returns n fresh messages: payload of the options' size, key i
// mod Keys.
func (b *outboxBench) messages(n int) []*message.Message {
	payload := []byte(strings.Repeat("x", b.opts.PayloadBytes))
	msgs := make([]*message.Message, n)
	for i := range msgs {
		m := message.NewMessage(watermill.NewUUID(), payload)
		m.Metadata.Set(kafka.PartitionKeyMetadata, "key-"+strconv.Itoa(i%b.opts.Keys))
		msgs[i] = m
	}
	return msgs
}

// fill commits msgs in transactions of up to 500.
func (b *outboxBench) fill(ctx context.Context, topic string, msgs []*message.Message) error {
	for start := 0; start < len(msgs); start += 500 {
		if err := b.commit(ctx, topic, msgs[start:min(len(msgs), start+500)], nil); err != nil {
			return err
		}
	}
	return nil
}

// commit writes msgs in one transaction; before calls before Commit.
func (b *outboxBench) commit(ctx context.Context, topic string, msgs []*message.Message, before func()) error {
	tx, err := b.db.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := b.ob.Write(ctx, tx, topic, msgs...); err != nil {
		_ = tx.Rollback()
		return err
	}
	if before != nil {
		before()
	}
	return tx.Commit()
}

// startRelay runs a relay until the returned stop is called.
func (b *outboxBench) startRelay(ctx context.Context) (*outbox.Relay, func() error, error) {
	relay, err := outbox.NewRelay(b.ob, outbox.RelayConfig{
		Publisher: b.pub, BatchSize: b.opts.BatchSize, Notify: b.opts.Notify, PollInterval: b.opts.PollInterval,
	})
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	return relay, func() error { cancel(); return <-done }, nil
}

// drainRound publishes the same messages directly and through a relay,
// in an order that alternates from round to round.
func (b *outboxBench) drainRound(ctx context.Context, round int) (DrainRound, error) {
	msgs := b.messages(b.opts.Messages)
	dr := DrainRound{Round: round + 1}
	direct := func() error {
		topic := fmt.Sprintf("outbox_bench_%s_direct_%d", b.opts.RunID, round)
		b.pub.reset(len(msgs))
		start := time.Now()
		for i := 0; i < len(msgs); i += b.opts.BatchSize {
			if err := b.pub.Publish(topic, msgs[i:min(len(msgs), i+b.opts.BatchSize)]...); err != nil {
				return err
			}
		}
		dr.DirectMS = round3(ms(time.Since(start)))
		return b.pub.check(msgs)
	}
	relayed := func() error {
		topic := fmt.Sprintf("outbox_bench_%s_relay_%d", b.opts.RunID, round)
		if err := b.fill(ctx, topic, msgs); err != nil {
			return fmt.Errorf("fill the outbox: %w", err)
		}
		b.pub.reset(len(msgs))
		start := time.Now()
		relay, stop, err := b.startRelay(ctx)
		if err != nil {
			return err
		}
		for relay.Stats().Published < int64(len(msgs)) {
			if err := ctx.Err(); err != nil {
				_ = stop()
				return fmt.Errorf("the relay published %d of %d rows: %w", relay.Stats().Published, len(msgs), err)
			}
			time.Sleep(200 * time.Microsecond)
		}
		dr.RelayMS = round3(ms(time.Since(start)))
		if err := stop(); err != nil {
			return err
		}
		return b.pub.check(msgs)
	}
	order := []func() error{direct, relayed}
	if round%2 == 1 {
		order[0], order[1] = relayed, direct
	}
	for _, f := range order {
		if err := f(); err != nil {
			return dr, err
		}
	}
	dr.DirectPerSec = round3(float64(len(msgs)) / (dr.DirectMS / 1000))
	dr.RelayPerSec = round3(float64(len(msgs)) / (dr.RelayMS / 1000))
	return dr, nil
}

// latency commits one message per transaction from writers writers, at
// rate messages per second in all (0: one writer pausing IdlePause
// between commits), with a relay running, and measures commit-to-publish.
func (b *outboxBench) latency(ctx context.Context, phase string, writers int, rate float64) (LatencyResult, error) {
	n := b.opts.IdleMessages
	if rate > 0 {
		n = min(max(writers, int(rate*b.opts.HalfRateDuration.Seconds())), maxHalfRateMessages)
	}
	topic := fmt.Sprintf("outbox_bench_%s_%s", b.opts.RunID, phase)
	msgs := b.messages(n)
	b.pub.reset(n)
	_, stop, err := b.startRelay(ctx)
	if err != nil {
		return LatencyResult{}, err
	}
	defer func() { _ = stop() }()
	committed := make([]time.Time, n)
	start := time.Now()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		werr = make(chan error, writers)
	)
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
				} else if i > 0 {
					time.Sleep(b.opts.IdlePause/2 + rand.N(b.opts.IdlePause+1))
				}
				if err := b.commit(ctx, topic, msgs[i:i+1], func() { committed[i] = time.Now() }); err != nil {
					werr <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(werr)
	if err := <-werr; err != nil {
		return LatencyResult{}, err
	}
	if err := b.pub.wait(ctx, msgs); err != nil {
		return LatencyResult{}, err
	}
	ds := make([]time.Duration, n)
	for i, m := range msgs {
		ds[i] = max(b.pub.at(m.UUID).Sub(committed[i]), 0)
	}
	s := summarize(ds)
	return LatencyResult{
		Messages: n, Writers: writers, TargetPerSec: round3(rate), AchievedPerSec: round3(float64(n) / elapsed.Seconds()),
		P50MS: round3(ms(s.P50)), P99MS: round3(ms(s.P99)), MaxMS: round3(ms(s.Max)),
	}, nil
}

// countStatements counts at the driver what a Write of one message and a
// Write of statementMessages messages send inside their transaction, on a
// connection of its own to the same database.
func (b *outboxBench) countStatements(ctx context.Context, spec backend.Spec, table string) (StatementCount, error) {
	path := ""
	if spec.Kind == backend.SQLite {
		path = strings.TrimPrefix(b.db.Display, "sqlite://")
	}
	conn, err := backend.Connector(spec, path)
	if err != nil {
		return StatementCount{}, err
	}
	counter := &stmtCounter{inner: conn}
	db := sql.OpenDB(counter)
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	ob, err := outbox.New(db, &outbox.Options{Table: table, Dialect: b.db.Dialect, Notify: b.opts.Notify})
	if err != nil {
		return StatementCount{}, err
	}
	topic := "outbox_bench_" + b.opts.RunID + "_statements"
	write := func(msgs []*message.Message) ([]string, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		counter.take()
		if err := ob.Write(ctx, tx, topic, msgs...); err != nil {
			_ = tx.Rollback()
			return nil, err
		}
		stmts := counter.take()
		// Rolled back: the rows never reach the relays.
		return stmts, tx.Rollback()
	}
	one, err := write(b.messages(1))
	if err != nil {
		return StatementCount{}, err
	}
	keys := min(b.opts.Keys, 10)
	many := b.messages(statementMessages)
	for i, m := range many {
		m.Metadata.Set(kafka.PartitionKeyMetadata, "key-"+strconv.Itoa(i%keys))
	}
	manyStmts, err := write(many)
	if err != nil {
		return StatementCount{}, err
	}
	sc := StatementCount{One: len(one), Many: len(manyStmts), ManyMessages: statementMessages, ManyKeys: keys, StatementsMany: manyStmts}
	for _, s := range manyStmts {
		if u := strings.ToUpper(strings.ReplaceAll(strings.ReplaceAll(s, `"`, ""), "`", "")); strings.Contains(u, "INSERT INTO "+strings.ToUpper(table)+" ") {
			sc.InsertsMany++
		}
	}
	for i, s := range sc.StatementsMany {
		if len(s) > 160 {
			sc.StatementsMany[i] = s[:157] + "…"
		}
	}
	return sc, nil
}

// timedPublisher records when the Publish of each message returned.
type timedPublisher struct {
	inner message.Publisher
	mu    sync.Mutex
	seen  map[string]time.Time
}

func (p *timedPublisher) reset(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = make(map[string]time.Time, n)
}

func (p *timedPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.inner.Publish(topic, msgs...); err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		if _, ok := p.seen[m.UUID]; !ok {
			p.seen[m.UUID] = now
		}
	}
	return nil
}

func (p *timedPublisher) Close() error { return nil }

func (p *timedPublisher) at(uuid string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[uuid]
}

// check fails with ErrCheck unless every message was published.
func (p *timedPublisher) check(msgs []*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	missing := 0
	for _, m := range msgs {
		if _, ok := p.seen[m.UUID]; !ok {
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%w: %d of %d messages were not published", ErrCheck, missing, len(msgs))
	}
	return nil
}

// wait waits until every message was published, up to a minute without
// progress.
func (p *timedPublisher) wait(ctx context.Context, msgs []*message.Message) error {
	last, lastChange := -1, time.Now()
	for {
		p.mu.Lock()
		n := len(p.seen)
		p.mu.Unlock()
		if n >= len(msgs) {
			return p.check(msgs)
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > DefaultStall {
			return fmt.Errorf("%w: %d of %d messages published, none for %v", ErrCheck, n, len(msgs), DefaultStall)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

var _ message.Publisher = (*timedPublisher)(nil)
