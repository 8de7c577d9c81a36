package kafkadlq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dlq"
)

// ErrNoTopic is matched by the error [Source.Read] returns for a topic the
// cluster does not have.
var ErrNoTopic = errors.New("kafkadlq: no such topic")

// ErrUnreachable is matched by the error [NewSource] returns when no broker
// answers within the dial timeout.
var ErrUnreachable = errors.New("kafkadlq: Kafka is unreachable")

// Defaults of the options.
const (
	// DefaultDialTimeout bounds how long NewSource waits for a broker to answer.
	DefaultDialTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long Read waits for the next record of a
	// partition that has not reached its end yet before it takes the gap as
	// the end (a compacted or transaction-marker tail has no record there).
	DefaultIdleTimeout = 10 * time.Second
)

// Option configures [NewSource].
type Option func(*options)

type options struct {
	tls         *tls.Config
	clientID    string
	dialTimeout time.Duration
	idleTimeout time.Duration
	extra       []kgo.Opt
}

// WithTLS connects over TLS with c. Defaults to plaintext.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithClientID names the client in the brokers' logs. Defaults to "idempo-dlq".
func WithClientID(id string) Option { return func(o *options) { o.clientID = id } }

// WithDialTimeout bounds how long [NewSource] waits for a broker to answer.
// Defaults to [DefaultDialTimeout].
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithIdleTimeout sets how long Read waits for a record it still expects
// before it takes the silence as the partition's end. Defaults to
// [DefaultIdleTimeout]. It only matters for partitions whose last offsets
// hold no readable record (compaction, transaction markers).
func WithIdleTimeout(d time.Duration) Option { return func(o *options) { o.idleTimeout = d } }

// WithClientOptions adds franz-go client options, e.g. SASL for an existing
// cluster. They are applied after idempo's own.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}

// Source reads Kafka DLQ topics for [dlq.Ops]. It assigns partitions
// directly, without a consumer group, so reading never commits an offset,
// never joins a group and never changes what any consumer sees. It is safe
// for concurrent use; each Read uses its own connections.
type Source struct {
	brokers []string
	opts    options
	admin   *kgo.Client
}

var _ dlq.Source = (*Source)(nil)

// NewSource connects to the bootstrap brokers (host:port) and returns a
// Source, or an error matching [ErrUnreachable] when none answers within
// the dial timeout. Close it when done.
func NewSource(brokers []string, opts ...Option) (*Source, error) {
	if len(brokers) == 0 {
		return nil, errors.New("kafkadlq: no brokers (want host:port)")
	}
	o := options{clientID: "idempo-dlq", dialTimeout: DefaultDialTimeout, idleTimeout: DefaultIdleTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Source{brokers: slices.Clone(brokers), opts: o}
	admin, err := kgo.NewClient(s.clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafkadlq: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.dialTimeout)
	defer cancel()
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, strings.Join(brokers, ","), err)
	}
	s.admin = admin
	return s, nil
}

func (s *Source) clientOpts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(s.brokers...), kgo.ClientID(s.opts.clientID)}
	if s.opts.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(s.opts.tls))
	}
	opts = append(opts, extra...)
	return append(opts, s.opts.extra...)
}

// Close closes the Source's connections.
func (s *Source) Close() error {
	s.admin.Close()
	return nil
}

// span is the readable range of one partition as of the call: [start, end).
type span struct {
	partition  int32
	start, end int64
}

// Read calls fn for every record of topic, partition by partition (in
// partition order, each from its oldest retained offset), up to each
// partition's high watermark as of the call. Records appended meanwhile are
// not read. Each record becomes a message exactly as the idempo Kafka
// subscriber converts it ([kafka.Marshaler]); the entry's Position is
// "partition/offset". A missing topic yields an error matching [ErrNoTopic];
// an empty topic calls fn never.
func (s *Source) Read(ctx context.Context, topic string, fn func(dlq.Entry) error) error {
	spans, err := s.spans(ctx, topic)
	if err != nil {
		return err
	}
	for _, sp := range spans {
		if sp.start >= sp.end {
			continue
		}
		if err := s.readPartition(ctx, topic, sp, fn); err != nil {
			return err
		}
	}
	return nil
}

// spans returns each partition's range, in partition order.
func (s *Source) spans(ctx context.Context, topic string) ([]span, error) {
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	mreq.Topics = append(mreq.Topics, mt)
	mreq.AllowAutoTopicCreation = false
	mresp, err := mreq.RequestWith(ctx, s.admin)
	if err != nil {
		return nil, fmt.Errorf("kafkadlq: metadata of topic %q: %w", topic, err)
	}
	if len(mresp.Topics) != 1 {
		return nil, fmt.Errorf("kafkadlq: metadata of topic %q: %d topics in the answer", topic, len(mresp.Topics))
	}
	mt2 := mresp.Topics[0]
	if err := kerr.ErrorForCode(mt2.ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("%w: %q (nothing was ever dead-lettered there, or the name is wrong)", ErrNoTopic, topic)
		}
		return nil, fmt.Errorf("kafkadlq: metadata of topic %q: %w", topic, err)
	}
	spans := make([]span, 0, len(mt2.Partitions))
	for _, p := range mt2.Partitions {
		spans = append(spans, span{partition: p.Partition})
	}
	slices.SortFunc(spans, func(a, b span) int { return int(a.partition) - int(b.partition) })
	if len(spans) == 0 {
		return nil, nil
	}
	for _, ts := range []int64{-2, -1} { // earliest, then latest (the high watermark)
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		lt := kmsg.NewListOffsetsRequestTopic()
		lt.Topic = topic
		for _, sp := range spans {
			lp := kmsg.NewListOffsetsRequestTopicPartition()
			lp.Partition = sp.partition
			lp.Timestamp = ts
			lp.CurrentLeaderEpoch = -1
			lt.Partitions = append(lt.Partitions, lp)
		}
		req.Topics = append(req.Topics, lt)
		resp, err := req.RequestWith(ctx, s.admin)
		if err != nil {
			return nil, fmt.Errorf("kafkadlq: list offsets of topic %q: %w", topic, err)
		}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					return nil, fmt.Errorf("kafkadlq: list offsets of %s/%d: %w", topic, rp.Partition, err)
				}
				i := slices.IndexFunc(spans, func(sp span) bool { return sp.partition == rp.Partition })
				if i < 0 {
					continue
				}
				if ts == -2 {
					spans[i].start = rp.Offset
				} else {
					spans[i].end = rp.Offset
				}
			}
		}
	}
	return spans, nil
}

func (s *Source) readPartition(ctx context.Context, topic string, sp span, fn func(dlq.Entry) error) error {
	cl, err := kgo.NewClient(s.clientOpts(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {sp.partition: kgo.NewOffset().At(sp.start)}}),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("kafkadlq: %w", err)
	}
	defer cl.Close()
	next := sp.start
	for next < sp.end {
		pctx, cancel := context.WithTimeout(ctx, s.opts.idleTimeout)
		fetches := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		progressed := false
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("kafkadlq: fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			if r.Offset < next {
				continue
			}
			progressed = true
			next = r.Offset + 1
			if r.Offset >= sp.end {
				break // appended after the call
			}
			if r.Attrs.IsControl() {
				continue
			}
			if err := fn(entry(topic, r)); err != nil {
				return err
			}
		}
		if !progressed {
			// Nothing readable arrived within the idle timeout: the rest of
			// the range holds no record (compaction, transaction markers).
			return nil
		}
	}
	return nil
}

// entry converts a record exactly as the idempo Kafka subscriber does.
func entry(topic string, r *kgo.Record) dlq.Entry {
	cm := &sarama.ConsumerMessage{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       r.Key,
		Value:     r.Value,
		Timestamp: r.Timestamp,
		Headers:   make([]*sarama.RecordHeader, 0, len(r.Headers)),
	}
	for _, h := range r.Headers {
		cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	msg, _ := kafka.Marshaler{}.Unmarshal(cm) // never fails
	return dlq.ParseEntry(topic, strconv.FormatInt(int64(r.Partition), 10)+"/"+strconv.FormatInt(r.Offset, 10), msg)
}
