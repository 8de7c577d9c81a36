package kafkadlq

import (
	"context"
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
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/internal/wire"
)

// ErrNoTopic is matched by the error [Source.Read] returns for a topic the
// cluster does not have.
var ErrNoTopic = errors.New("kafkadlq: no such topic")

// ErrUnreachable is matched by the error [NewSource] returns when no broker
// answers within the dial timeout.
var ErrUnreachable = errors.New("kafkadlq: Kafka is unreachable")

// Options tunes a [Source]. A nil *Options means all defaults.
type Options struct {
	// DialTimeout bounds how long [NewSource] waits for a broker to answer.
	// Defaults to 10s.
	DialTimeout time.Duration
	// IdleTimeout is how long Read waits for a record it still expects
	// before it takes the silence as the partition's end. It only matters
	// for partitions whose last offsets hold no readable record (compaction,
	// transaction markers). Defaults to 10s.
	IdleTimeout time.Duration
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.DialTimeout <= 0 {
		r.DialTimeout = 10 * time.Second
	}
	if r.IdleTimeout <= 0 {
		r.IdleTimeout = 10 * time.Second
	}
	return r
}

// Source reads Kafka DLQ topics for [dlqops.Ops]. It assigns partitions
// directly, without a consumer group, so reading never commits an offset,
// never joins a group and never changes what any consumer sees. It is safe
// for concurrent use; each Read uses its own connections.
type Source struct {
	cfg   kafka.Config
	opts  Options
	admin *kgo.Client
}

var _ dlqops.Source = (*Source)(nil)

// NewSource connects to the cluster cfg names — its Brokers, and the same
// TLS, SASL and ClientID the preset's publisher and subscriber use, so
// credentials are given once — and returns a Source, or an error matching
// [ErrUnreachable] when no broker answers within the dial timeout. Close it
// when done.
func NewSource(cfg kafka.Config, opts *Options) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, opts: opts.withDefaults()}
	s.cfg.Brokers = slices.Clone(cfg.Brokers)
	if s.cfg.ClientID == "" {
		s.cfg.ClientID = "idempo-dlq"
	}
	admin, err := kgo.NewClient(s.clientOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafkadlq: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.DialTimeout)
	defer cancel()
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, strings.Join(cfg.Brokers, ","), err)
	}
	s.admin = admin
	return s, nil
}

// clientOpts are the franz-go options for the Source's configuration.
func (s *Source) clientOpts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(s.cfg.Brokers...), kgo.ClientID(s.cfg.ClientID)}
	if s.cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(s.cfg.TLS))
	}
	if a := s.cfg.SASL; a != nil {
		switch strings.ToUpper(a.Mechanism) {
		case "", kafka.SASLPlain:
			opts = append(opts, kgo.SASL(plain.Auth{User: a.User, Pass: a.Password}.AsMechanism()))
		case kafka.SASLScramSHA256:
			opts = append(opts, kgo.SASL(scram.Auth{User: a.User, Pass: a.Password}.AsSha256Mechanism()))
		case kafka.SASLScramSHA512:
			opts = append(opts, kgo.SASL(scram.Auth{User: a.User, Pass: a.Password}.AsSha512Mechanism()))
		}
	}
	return append(opts, extra...)
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
// subscriber converts it ((internal/wire)); the entry's Position is
// "partition/offset". A missing topic yields an error matching [ErrNoTopic];
// an empty topic calls fn never.
func (s *Source) Read(ctx context.Context, topic string, fn func(dlqops.Entry) error) error {
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

// ReadAfter is [Source.Read] from the offset after after[partition] in
// each partition it names (the partition as a decimal, as in positions),
// and from the oldest retained offset in the others: how the dead-letter
// console (dlq/console) tails a DLQ from where its index stopped.
func (s *Source) ReadAfter(ctx context.Context, topic string, after map[string]int64, fn func(dlqops.Entry) error) error {
	spans, err := s.spans(ctx, topic)
	if err != nil {
		return err
	}
	for _, sp := range spans {
		if off, ok := after[strconv.FormatInt(int64(sp.partition), 10)]; ok && off+1 > sp.start {
			sp.start = off + 1
		}
		if sp.start >= sp.end {
			continue
		}
		if err := s.readPartition(ctx, topic, sp, fn); err != nil {
			return err
		}
	}
	return nil
}

// Topics returns the names of the cluster's topics that end with suffix
// (every topic for ""), sorted, internal topics left out: how DLQ topics
// are found by their suffix (".dlq" by default in package dlq).
func (s *Source) Topics(ctx context.Context, suffix string) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest() // no topics: all of them
	resp, err := req.RequestWith(ctx, s.admin)
	if err != nil {
		return nil, fmt.Errorf("kafkadlq: list topics: %w", err)
	}
	var out []string
	for _, t := range resp.Topics {
		if t.Topic == nil || t.IsInternal || kerr.ErrorForCode(t.ErrorCode) != nil {
			continue
		}
		if strings.HasSuffix(*t.Topic, suffix) {
			out = append(out, *t.Topic)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Count returns how many records topic holds (retained offsets, summed over
// its partitions) as of the call: what the dead-letter console shows as
// "indexing n of N". A missing topic yields an error matching [ErrNoTopic].
func (s *Source) Count(ctx context.Context, topic string) (int, error) {
	spans, err := s.spans(ctx, topic)
	if err != nil {
		return 0, err
	}
	n := int64(0)
	for _, sp := range spans {
		n += max(sp.end-sp.start, 0)
	}
	return int(n), nil
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

func (s *Source) readPartition(ctx context.Context, topic string, sp span, fn func(dlqops.Entry) error) error {
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
		pctx, cancel := context.WithTimeout(ctx, s.opts.IdleTimeout)
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
func entry(topic string, r *kgo.Record) dlqops.Entry {
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
	msg, _ := wire.KafkaMarshaler{}.Unmarshal(cm) // never fails
	return dlqops.ParseEntry(topic, strconv.FormatInt(int64(r.Partition), 10)+"/"+strconv.FormatInt(r.Offset, 10), msg)
}
