package natsdlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/internal/wire"
)

// ErrNoStream is matched by the error [Source.Read] returns for a DLQ topic
// that no stream captures.
var ErrNoStream = errors.New("natsdlq: no stream holds the topic")

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("natsdlq: source closed")

// Source reads DLQ streams for [dlqops.Ops] by stream sequence, without a
// consumer: nothing is consumed or acked. It is safe for concurrent use.
type Source struct {
	nc *natsgo.Conn
	js jetstream.JetStream

	mu     sync.Mutex
	closed bool
}

var _ dlqops.Source = (*Source)(nil)

// NewSource connects to cfg.URL (see [nats.ParseURL]; cfg.TLS is used) and
// returns a Source. Close it when done.
func NewSource(cfg nats.Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []natsgo.Option{natsgo.Name("idempo-dlq"), natsgo.MaxReconnects(-1)}
	if cfg.TLS != nil {
		opts = append(opts, natsgo.Secure(cfg.TLS))
	}
	nc, err := natsgo.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsdlq: NATS at %s is unreachable: %w", nats.Redact(cfg.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsdlq: JetStream: %w", err)
	}
	return &Source{nc: nc, js: js}, nil
}

// Close closes the connection. Reads in progress fail.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.nc.Close()
	}
	return nil
}

// stream returns the stream holding topic's subject.
func (s *Source) stream(ctx context.Context, topic string) (jetstream.Stream, string, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, "", ErrClosed
	}
	subject, err := nats.Subject(topic)
	if err != nil {
		return nil, "", err
	}
	name, err := s.js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, "", fmt.Errorf("%w: %q (nothing was ever dead-lettered there, or the name is wrong)", ErrNoStream, topic)
	}
	if err != nil {
		return nil, "", fmt.Errorf("natsdlq: find the stream of %q: %w", topic, err)
	}
	st, err := s.js.Stream(ctx, name)
	if err != nil {
		return nil, "", fmt.Errorf("natsdlq: stream %q: %w", name, err)
	}
	return st, subject, nil
}

// Read calls fn for every message of topic's stream, oldest first, up to
// the last sequence as of the call. Each becomes a message exactly as the
// idempo NATS subscriber converts it (internal/wire); the entry's Position
// is its stream sequence. A topic no stream holds yields an error matching
// [ErrNoStream].
func (s *Source) Read(ctx context.Context, topic string, fn func(dlqops.Entry) error) error {
	return s.read(ctx, topic, 0, fn)
}

// ReadAfter is [Source.Read] from the sequence after after[""] (the position
// of the last entry read before; from the first when it has none): how the
// dead-letter console (dlq/console) tails a DLQ from where its index stopped.
func (s *Source) ReadAfter(ctx context.Context, topic string, after map[string]int64, fn func(dlqops.Entry) error) error {
	var from uint64
	if last, ok := after[""]; ok && last >= 0 {
		from = uint64(last) + 1
	}
	return s.read(ctx, topic, from, fn)
}

func (s *Source) read(ctx context.Context, topic string, from uint64, fn func(dlqops.Entry) error) error {
	st, subject, err := s.stream(ctx, topic)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("natsdlq: stream of %q: %w", topic, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := max(from, info.State.FirstSeq); seq <= info.State.LastSeq; seq++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted, or purged meanwhile
		}
		if err != nil {
			return fmt.Errorf("natsdlq: read %q at sequence %d: %w", topic, seq, err)
		}
		if raw.Subject != subject {
			continue // a stream of another tool that captures more subjects
		}
		msg := wire.NATSUnmarshal(raw.Header, raw.Data)
		if err := fn(dlqops.ParseEntry(topic, strconv.FormatUint(seq, 10), msg)); err != nil {
			return err
		}
	}
	return nil
}

// Count returns how many messages topic's stream holds on its subject (the
// dead-letter console's "indexing n of N").
func (s *Source) Count(ctx context.Context, topic string) (int, error) {
	st, subject, err := s.stream(ctx, topic)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("natsdlq: stream of %q: %w", topic, err)
	}
	if n, ok := info.State.Subjects[subject]; ok {
		return int(n), nil
	}
	if len(info.Config.Subjects) == 1 && info.Config.Subjects[0] == subject {
		return int(info.State.Msgs), nil
	}
	return 0, nil
}

// NewDLQPublisher returns the publisher for dead-letter copies (give it to
// middleware.Config.DLQ.Publisher): the idempo NATS publisher of package
// broker/nats with cfg, except that MaxAge is cleared, so the streams it
// creates keep dead letters until they are deleted.
func NewDLQPublisher(cfg nats.Config, logger *slog.Logger) (*nats.Publisher, error) {
	cfg.MaxAge = 0
	return nats.NewPublisher(cfg, logger)
}

// NewReplayPublisher returns the publisher [dlqops.Ops] replays through on
// NATS: replays go to the consumers' topics, entries past the replay cap to
// the parking topic, each a stream that keeps what it holds ([nats.Config]
// with MaxAge cleared, as for [NewDLQPublisher]). Replayed copies carry the
// replay's ID in their Nats-Msg-Id (see package broker/nats), so JetStream
// does not drop them as duplicates.
func NewReplayPublisher(cfg nats.Config, logger *slog.Logger) (*nats.Publisher, error) {
	return NewDLQPublisher(cfg, logger)
}
