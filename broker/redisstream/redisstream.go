package redisstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wredis "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/internal/progress"
	"github.com/idempo/idempo/internal/wire"
)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("redisstream: closed")

// ErrNotOwner is returned by the Touch the subscriber attaches to a
// message when the entry is no longer pending under this consumer: it was
// acknowledged, or claimed by another consumer after ClaimIdle.
var ErrNotOwner = errors.New("redisstream: the entry is no longer pending under this consumer")

// marshaler adapts [wire.RedisMarshal] to watermill-redisstream.
type marshaler struct{}

func (marshaler) Marshal(_ string, msg *message.Message) (map[string]any, error) {
	return wire.RedisMarshal(msg), nil
}

func (marshaler) Unmarshal(values map[string]any) (*message.Message, error) {
	return wire.RedisUnmarshal("", values), nil
}

// Publisher appends Watermill messages to Redis streams (XADD). Create it
// with [NewPublisher]. It is safe for concurrent use.
type Publisher struct {
	inner *wredis.Publisher
	url   string

	mu     sync.RWMutex
	closed bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher connects to cfg.URL and returns a publisher (with defaults
// applied). Publish appends each message to the stream named topic with
// XADD (an auto-generated entry ID), creating the stream if needed, and
// returns once Redis has replied; with MaxLen set it trims the stream to
// about that length (see [Config.MaxLen]). Whether an appended entry
// survives a server crash is the server's persistence setting (appendonly
// yes with appendfsync everysec loses up to a second). A nil logger logs
// nothing.
func NewPublisher(cfg Config, logger *slog.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	client, err := cfg.client()
	if err != nil {
		return nil, err
	}
	inner, err := wredis.NewPublisher(wredis.PublisherConfig{
		Client: client, Marshaller: marshaler{}, DefaultMaxlen: cfg.MaxLen,
	}, watermillLogger(logger))
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redisstream: new publisher for %s: %w", Redact(cfg.URL), err)
	}
	return &Publisher{inner: inner, url: cfg.URL}, nil
}

// Publish appends msgs to the stream named topic, one at a time, returning
// the first error. Each XADD runs with the message's context. Publish after
// Close returns [ErrClosed].
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	for _, msg := range msgs {
		if err := p.inner.Publish(topic, msg); err != nil {
			return fmt.Errorf("redisstream: publish %s to %q: %w", msg.UUID, topic, err)
		}
	}
	return nil
}

// Close waits for Publish calls to return and closes the connection. It
// is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.inner.Close()
}

// Subscriber reads Watermill messages from Redis streams through a
// consumer group. Create it with [NewSubscriber]. It is safe for concurrent
// use.
//
// It does not use watermill-redisstream's subscriber, which hands a nacked
// message out again in-process at once and forever (its delivery count
// never grows), claims pending entries by an idle time unrelated to any
// lease, cannot be told that a handler is still running, and fails on an
// entry without its UUID field (every entry of a producer that is not
// Watermill).
type Subscriber struct {
	cfg    Config
	client *redis.Client
	logger *slog.Logger

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
	topics  map[string]bool
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber connects to cfg.URL and returns a subscriber (with defaults
// applied), after checking that ClaimIdle is longer than Lease + NackDelay
// (the error, matching [ErrInvalidConfig], names the three).
//
// Subscribe creates the consumer group (at the stream's start) if needed
// and starts Consumers loops, merged into one output channel. Each loop
// hands out one entry at a time: first the entries already pending under
// this consumer name, then every ClaimInterval the entries of other
// consumers idle for longer than ClaimIdle (XAUTOCLAIM), otherwise new
// entries (XREADGROUP). An ack acknowledges the entry (XACK, retried until
// it succeeds or the subscriber closes); a nack leaves it pending and, after
// NackDelay, claims it back (XCLAIM, which counts a delivery) and hands it
// out again, forever: bound the loop with the idempo middleware's delivery
// cap. A crash leaves the entry pending; another consumer claims it after
// ClaimIdle.
//
// Each message's context carries a Touch (internal/progress) that the
// idempo stack's lease keeper calls after every lease extension: it resets
// the entry's idle time (XCLAIM … JUSTID to the same consumer, only if the
// entry is still pending under it), so no other consumer claims an entry
// whose handler still runs. Entries are converted as the package
// documentation says, which never fails; the metadata holds the entry ID
// and the group's delivery count. A nil logger logs nothing.
func NewSubscriber(cfg Config, logger *slog.Logger) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.checkClock(); err != nil {
		return nil, err
	}
	client, err := cfg.client()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Subscriber{cfg: cfg, client: client, logger: logger, closing: make(chan struct{}), topics: map[string]bool{}}, nil
}

// Consumer returns the consumer name the subscriber reads under.
func (s *Subscriber) Consumer() string { return s.cfg.Consumer }

// SubscribeInitialize creates the stream and its consumer group (at the
// stream's start) if they do not exist, without reading.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.ensureGroup(ctx, topic)
}

func (s *Subscriber) ensureGroup(ctx context.Context, topic string) error {
	err := s.client.XGroupCreateMkStream(ctx, topic, s.cfg.ConsumerGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("redisstream: create group %q on %q: %w", s.cfg.ConsumerGroup, topic, err)
	}
	return nil
}

// Subscribe starts reading the stream named topic; see [NewSubscriber].
// The returned channel is closed when ctx is done or the subscriber is
// closed, after the messages handed out are settled.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if err := s.ensureGroup(ctx, topic); err != nil {
		return nil, err
	}
	own, err := s.ownPending(ctx, topic)
	if err != nil {
		return nil, err
	}
	s.topics[topic] = true
	ctx, cancel := context.WithCancel(ctx)
	sub := &subscription{s: s, topic: topic, own: own, cursor: "0-0"}
	out := make(chan *message.Message)
	var loops sync.WaitGroup
	for range s.cfg.Consumers {
		loops.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer loops.Done()
			sub.loop(ctx, out)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		cancel()
		loops.Wait()
		close(out)
	}()
	return out, nil
}

// ownPending lists the entries pending under this consumer name (left by
// a previous run with the same name).
func (s *Subscriber) ownPending(ctx context.Context, topic string) ([]string, error) {
	var ids []string
	start := "-"
	for {
		ps, err := s.client.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: topic, Group: s.cfg.ConsumerGroup, Consumer: s.cfg.Consumer, Start: start, End: "+", Count: 256,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstream: list pending entries of %q on %q: %w", s.cfg.Consumer, topic, err)
		}
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		if len(ps) < 256 {
			return ids, nil
		}
		start = "(" + ps[len(ps)-1].ID
	}
}

// claimScript claims ARGV[3] for consumer ARGV[2] of group ARGV[1] only if
// it is pending under that consumer already. With ARGV[4] == "1" it only
// resets the idle time (JUSTID, the delivery count stays); otherwise it
// returns {delivery count, entries} with the count grown by one. It returns
// false when the entry is not pending under the consumer.
var claimScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return false end
if ARGV[4] == '1' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
  return 1
end
return {p[1][4] + 1, redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])}
`)

// subscription is one Subscribe call's state, shared by its loops.
type subscription struct {
	s     *Subscriber
	topic string

	mu        sync.Mutex
	own       []string // entries pending under our name at start, not yet handed out
	cursor    string   // XAUTOCLAIM cursor
	nextClaim time.Time
}

// entry is one stream entry with its delivery count.
type entry struct {
	redis.XMessage
	count int64
}

func (u *subscription) loop(ctx context.Context, out chan<- *message.Message) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		e, err := u.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			u.s.logger.Warn("redisstream: reading the stream failed; retrying", "stream", u.topic, "error", err)
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				_ = u.s.ensureGroup(ctx, u.topic)
			}
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		if e != nil {
			u.handle(ctx, *e, out)
		}
	}
}

// next returns the next entry to hand out, or nil after an empty wait.
func (u *subscription) next(ctx context.Context) (*entry, error) {
	s := u.s
	u.mu.Lock()
	if len(u.own) > 0 {
		id := u.own[0]
		u.own = u.own[1:]
		u.mu.Unlock()
		e, err := u.claimOwn(ctx, id)
		if err != nil {
			u.mu.Lock()
			u.own = append([]string{id}, u.own...)
			u.mu.Unlock()
		}
		return e, err
	}
	claim := !time.Now().Before(u.nextClaim)
	cursor := u.cursor
	if claim {
		u.nextClaim = time.Now().Add(s.cfg.ClaimInterval) // one loop claims at a time
	}
	u.mu.Unlock()
	if claim {
		e, err := u.autoclaim(ctx, cursor)
		if err != nil || e != nil {
			return e, err
		}
	}
	res, err := s.client.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: s.cfg.ConsumerGroup, Consumer: s.cfg.Consumer, Streams: []string{u.topic, ">"},
		Count: 1, Block: s.cfg.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, st := range res {
		for _, m := range st.Messages {
			return &entry{XMessage: m, count: 1}, nil
		}
	}
	return nil, nil
}

// autoclaim claims one entry idle for longer than ClaimIdle. When it finds
// one, the next loop to ask claims again at once.
func (u *subscription) autoclaim(ctx context.Context, cursor string) (*entry, error) {
	s := u.s
	msgs, next, err := s.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: u.topic, Group: s.cfg.ConsumerGroup, Consumer: s.cfg.Consumer,
		MinIdle: s.cfg.ClaimIdle, Start: cursor, Count: 1,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("xautoclaim: %w", err)
	}
	u.mu.Lock()
	u.cursor = next
	if len(msgs) > 0 || next != "0-0" {
		u.nextClaim = time.Time{}
	}
	u.mu.Unlock()
	if len(msgs) == 0 {
		return nil, nil
	}
	m := msgs[0]
	count := int64(0)
	ps, err := s.client.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: u.topic, Group: s.cfg.ConsumerGroup, Start: m.ID, End: m.ID, Count: 1,
	}).Result()
	if err == nil && len(ps) == 1 {
		count = ps[0].RetryCount
	}
	s.logger.Info("redisstream: claimed an entry idle for longer than ClaimIdle", "stream", u.topic, "entry", m.ID,
		"deliveries", count, "claim_idle", s.cfg.ClaimIdle)
	return &entry{XMessage: m, count: count}, nil
}

// claimOwn claims id again (counting a delivery) if it is still pending
// under this consumer; nil when it is not, or was deleted from the stream
// (then it is acknowledged, as there is nothing left to handle).
func (u *subscription) claimOwn(ctx context.Context, id string) (*entry, error) {
	s := u.s
	res, err := claimScript.Run(ctx, s.client, []string{u.topic}, s.cfg.ConsumerGroup, s.cfg.Consumer, id, "0").Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil // no longer ours
	}
	if err != nil {
		return nil, fmt.Errorf("xclaim %s: %w", id, err)
	}
	arr, ok := res.([]any)
	if !ok || len(arr) != 2 {
		return nil, fmt.Errorf("xclaim %s: unexpected reply %T", id, res)
	}
	count, _ := arr[0].(int64)
	entries, _ := arr[1].([]any)
	if len(entries) == 0 {
		// Deleted from the stream (trimmed): Redis dropped it from the
		// pending list or will; nothing is left to handle.
		_ = s.client.XAck(ctx, u.topic, s.cfg.ConsumerGroup, id).Err()
		return nil, nil
	}
	m, err := scriptEntry(entries[0])
	if err != nil {
		return nil, fmt.Errorf("xclaim %s: %w", id, err)
	}
	return &entry{XMessage: m, count: count}, nil
}

// scriptEntry decodes one XCLAIM entry returned through a script.
func scriptEntry(v any) (redis.XMessage, error) {
	pair, ok := v.([]any)
	if !ok || len(pair) != 2 {
		return redis.XMessage{}, fmt.Errorf("unexpected entry %T", v)
	}
	id, _ := pair[0].(string)
	fields, _ := pair[1].([]any)
	values := make(map[string]any, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		values[k] = fields[i+1]
	}
	return redis.XMessage{ID: id, Values: values}, nil
}

// touch resets the idle time of the entry id if it is still pending under
// this consumer.
func (u *subscription) touch(id string) progress.Touch {
	s := u.s
	return func(ctx context.Context) error {
		err := claimScript.Run(ctx, s.client, []string{u.topic}, s.cfg.ConsumerGroup, s.cfg.Consumer, id, "1").Err()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("%w: %s on %q", ErrNotOwner, id, u.topic)
		}
		if err != nil {
			return fmt.Errorf("redisstream: touch %s on %q: %w", id, u.topic, err)
		}
		return nil
	}
}

// handle hands e out until it is acked (then XACKs it), or the
// subscription ends (it stays pending).
func (u *subscription) handle(ctx context.Context, e entry, out chan<- *message.Message) {
	s := u.s
	for {
		msg := wire.RedisUnmarshal(e.ID, e.Values)
		msg.Metadata[wire.RedisDeliveryCountKey] = strconv.FormatInt(e.count, 10)
		mctx, cancel := context.WithCancel(ctx)
		msg.SetContext(progress.Attach(mctx, u.touch(e.ID)))
		select {
		case out <- msg:
		case <-ctx.Done():
			cancel()
			return
		}
		select {
		case <-msg.Acked():
			cancel()
			u.ack(ctx, e.ID)
			return
		case <-msg.Nacked():
			cancel()
		case <-ctx.Done():
			cancel()
			return
		}
		if s.cfg.NackDelay > 0 {
			t := time.NewTimer(s.cfg.NackDelay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		backoff := newBackoff()
		for {
			next, err := u.claimOwn(ctx, e.ID)
			if err == nil {
				if next == nil {
					return // claimed by another consumer, or gone
				}
				e = *next
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.logger.Warn("redisstream: claiming a nacked entry back failed; retrying", "stream", u.topic, "entry", e.ID, "error", err)
			backoff.wait(ctx)
		}
	}
}

// ack acknowledges id, retrying until it succeeds or ctx is done (the
// entry then stays pending and is handed out again; the idempo stack
// recognises it as done).
func (u *subscription) ack(ctx context.Context, id string) {
	s := u.s
	backoff := newBackoff()
	for {
		// The ack outlives ctx briefly: the handler's work is done.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := s.client.XAck(actx, u.topic, s.cfg.ConsumerGroup, id).Err()
		cancel()
		if err == nil {
			return
		}
		s.logger.Warn("redisstream: XACK failed; retrying", "stream", u.topic, "entry", id, "error", err)
		if ctx.Err() != nil {
			return
		}
		backoff.wait(ctx)
	}
}

// TrimAcknowledged deletes from the stream topic the entries every
// consumer group has acknowledged (XTRIM MINID to the oldest entry still
// pending or not yet delivered in any group) and returns how many it
// deleted. A stream without groups is left alone. A group created later
// at the stream's start does not see the deleted entries. Redis 8.2's
// XTRIM … ACKED does the same in one command; this works on older servers.
func (s *Subscriber) TrimAcknowledged(ctx context.Context, topic string) (int64, error) {
	groups, err := s.client.XInfoGroups(ctx, topic).Result()
	if err != nil {
		return 0, fmt.Errorf("redisstream: trim %q: %w", topic, err)
	}
	if len(groups) == 0 {
		return 0, nil
	}
	minID := ""
	for _, g := range groups {
		keep := g.LastDeliveredID
		if g.Pending > 0 {
			p, err := s.client.XPending(ctx, topic, g.Name).Result()
			if err != nil {
				return 0, fmt.Errorf("redisstream: trim %q: %w", topic, err)
			}
			if p.Count > 0 && lessID(p.Lower, keep) {
				keep = p.Lower
			}
		}
		if minID == "" || lessID(keep, minID) {
			minID = keep
		}
	}
	n, err := s.client.XTrimMinID(ctx, topic, minID).Result()
	if err != nil {
		return 0, fmt.Errorf("redisstream: trim %q: %w", topic, err)
	}
	return n, nil
}

// lessID orders stream entry IDs (ms-seq).
func lessID(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	if am != bm {
		return am < bm
	}
	return as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	q, _ := strconv.ParseUint(seq, 10, 64)
	return m, q
}

// Close stops every subscription (entries handed out and not acked stay
// pending), waits for the loops to end, removes this consumer from each
// group it read if it holds no pending entries, and closes the connection.
// It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for topic := range s.topics {
		ps, err := s.client.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: topic, Group: s.cfg.ConsumerGroup, Consumer: s.cfg.Consumer, Start: "-", End: "+", Count: 1,
		}).Result()
		if err == nil && len(ps) == 0 {
			_ = s.client.XGroupDelConsumer(ctx, topic, s.cfg.ConsumerGroup, s.cfg.Consumer).Err()
		}
	}
	return s.client.Close()
}

// backoff waits 50ms, doubling up to 1s, between retries.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.d = min(2*b.d, time.Second)
}

// watermillLogger adapts l for the Watermill adapter underneath; nil logs
// nothing.
func watermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	if l == nil {
		return watermill.NopLogger{}
	}
	return watermill.NewSlogLogger(l)
}
