package redisstreamdlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/internal/wire"
)

// ErrNoStream is matched by the error [Source.Read] returns for a stream
// that does not exist.
var ErrNoStream = errors.New("redisstreamdlq: no such stream")

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("redisstreamdlq: source closed")

// seqBits is how many low bits of a position hold the entry ID's sequence
// number; the rest hold its milliseconds.
const seqBits = 20

// Position returns the position [Source] gives the entry with stream ID
// id ("1700000000000-3"): the decimal ms × 2^20 + seq, which grows with the
// stream as dlqops' positions must. It reports false for an ID that is not
// ms-seq or whose sequence number does not fit in 20 bits (more than a
// million entries in one millisecond, which XADD's auto IDs never reach).
func Position(id string) (string, bool) {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return "", false
	}
	m, err1 := strconv.ParseUint(ms, 10, 64)
	s, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil || s >= 1<<seqBits || m >= 1<<(63-seqBits) {
		return "", false
	}
	return strconv.FormatUint(m<<seqBits|s, 10), true
}

// StreamID is the inverse of [Position]: the stream entry ID at position p.
func StreamID(p string) (string, bool) {
	n, err := strconv.ParseInt(p, 10, 64)
	if err != nil || n < 0 {
		return "", false
	}
	return fmt.Sprintf("%d-%d", n>>seqBits, n&(1<<seqBits-1)), true
}

// NewDLQPublisher returns a publisher for dead-letter copies (give it to
// middleware.Config.DLQ.Publisher): the idempo Redis Streams publisher of
// package broker/redisstream with cfg, except that it never trims (MaxLen
// is cleared), so [Source] sees every copy.
func NewDLQPublisher(cfg redisstream.Config, logger *slog.Logger) (*redisstream.Publisher, error) {
	cfg.MaxLen = 0
	return redisstream.NewPublisher(cfg, logger)
}

// NewReplayPublisher returns the publisher [dlqops.Ops] replays through: a
// replayed copy is appended to its original stream (and an entry past the
// replay cap to the parking stream), never trimmed.
func NewReplayPublisher(cfg redisstream.Config, logger *slog.Logger) (*redisstream.Publisher, error) {
	return NewDLQPublisher(cfg, logger)
}

// pageSize is how many entries one XRANGE returns.
const pageSize = 256

// Source reads DLQ streams for [dlqops.Ops] and the dead-letter console
// with XRANGE, which consumes nothing: no consumer group is involved. It is
// safe for concurrent use.
type Source struct {
	client *redis.Client

	mu     sync.Mutex
	closed bool
}

var _ dlqops.Source = (*Source)(nil)

// NewSource connects to url (redis-stream://[user:pass@]host:6379/db) and
// returns a Source. Close it when done.
func NewSource(url string) (*Source, error) {
	cfg, err := redisstream.ParseURL(url)
	if err != nil {
		return nil, err
	}
	client, err := redisstream.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Source{client: client}, nil
}

// Close closes the connection. Reads in progress fail.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.client.Close()
}

func (s *Source) live() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Count returns how many copies the stream topic holds (XLEN); 0 for a
// stream that does not exist.
func (s *Source) Count(ctx context.Context, topic string) (int, error) {
	if err := s.live(); err != nil {
		return 0, err
	}
	n, err := s.client.XLen(ctx, topic).Result()
	if err != nil {
		return 0, fmt.Errorf("redisstreamdlq: XLEN %q: %w", topic, err)
	}
	return int(n), nil
}

// Read calls fn for every entry of the stream topic, oldest first, up to
// the last entry as of the call. Each entry becomes a message exactly as
// the idempo Redis Streams subscriber converts it (internal/wire), with its
// stream ID in the redisstream_entry_id metadata; its [Position] is the
// entry's Position. A missing stream yields an error matching
// [ErrNoStream].
func (s *Source) Read(ctx context.Context, topic string, fn func(dlqops.Entry) error) error {
	return s.read(ctx, topic, "-", fn)
}

// ReadAfter is [Source.Read] from the entry after the position after[""]
// (from the first when it has none): how the dead-letter console
// (dlq/console) tails a DLQ from where its index stopped.
func (s *Source) ReadAfter(ctx context.Context, topic string, after map[string]int64, fn func(dlqops.Entry) error) error {
	start := "-"
	if last, ok := after[""]; ok && last >= 0 {
		if id, ok := StreamID(strconv.FormatInt(last, 10)); ok {
			start = "(" + id
		}
	}
	return s.read(ctx, topic, start, fn)
}

func (s *Source) read(ctx context.Context, topic, start string, fn func(dlqops.Entry) error) error {
	if err := s.live(); err != nil {
		return err
	}
	lastEntry, err := s.client.XRevRangeN(ctx, topic, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("redisstreamdlq: read %q: %w", topic, err)
	}
	if len(lastEntry) == 0 {
		exists, err := s.client.Exists(ctx, topic).Result()
		if err != nil {
			return fmt.Errorf("redisstreamdlq: read %q: %w", topic, err)
		}
		if exists == 0 {
			return fmt.Errorf("%w: %q (nothing was ever dead-lettered there, or the name is wrong)", ErrNoStream, topic)
		}
		return nil
	}
	end := lastEntry[0].ID
	for {
		page, err := s.client.XRangeN(ctx, topic, start, end, pageSize).Result()
		if err != nil {
			return fmt.Errorf("redisstreamdlq: read %q: %w", topic, err)
		}
		for _, m := range page {
			msg := wire.RedisUnmarshal(m.ID, m.Values)
			pos, ok := Position(m.ID)
			if !ok {
				pos = m.ID
			}
			if err := fn(dlqops.ParseEntry(topic, pos, msg)); err != nil {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		start = "(" + page[len(page)-1].ID
	}
}
