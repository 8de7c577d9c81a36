package kafkadlq_test

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/kafkadlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

// TestReplayOnKafkaProcessesOnce runs the whole flow on the embedded
// cluster: poison events land in the DLQ topic; after the fix, a replay
// processes each exactly once, however often it is repeated or redelivered.
func TestReplayOnKafkaProcessesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayProcessesOnce(w.Publisher, func(t *testing.T, i int, e dlqops.Entry) {
		require.Equal(t, "0/"+[]string{"0", "1", "2"}[i], e.Position)
		require.Equal(t, []string{"0", "2", "4"}[i], e.Message.Metadata.Get(dlqmeta.KeyOffset), "the original's offset survives")
	})
}

// Records written by other tools, or with damaged idempo metadata, are
// listed with their problems, across partitions in partition order; a
// missing topic is a clear error and an empty topic lists nothing.
func TestForeignAndMalformedEntries(t *testing.T) {
	t.Parallel()
	empty := "empty_topic"
	w := newWorld(t, embedded.Config{Partitions: 2, Topics: []string{empty}})
	ops := w.Ops(nil)
	ctx := context.Background()

	err := ops.List(ctx, "no_such_topic", dlqops.Filter{}, func(dlqops.Entry) error { return nil })
	require.ErrorIs(t, err, kafkadlq.ErrNoTopic)
	require.ErrorContains(t, err, "no_such_topic")
	require.Empty(t, dlqtest.List(t, ops, empty, dlqops.Filter{}))

	cl, err := kgo.NewClient(kgo.SeedBrokers(w.emb.Addrs()...), kgo.AllowAutoTopicCreation(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx,
		&kgo.Record{Topic: w.DLQTopic, Partition: 1, Key: []byte("k"), Value: []byte("from another tool"), Headers: []kgo.RecordHeader{{Key: "x", Value: []byte("y")}}},
		&kgo.Record{Topic: w.DLQTopic, Partition: 0, Value: []byte("bad"), Headers: []kgo.RecordHeader{
			{Key: dlqmeta.KeyEntryID, Value: []byte("entry-bad")},
			{Key: dlqmeta.KeyAttempts, Value: []byte("abc")},
		}},
	).FirstErr())

	got := dlqtest.List(t, ops, w.DLQTopic, dlqops.Filter{})
	require.Len(t, got, 2)
	require.Equal(t, "entry-bad", got[0].ID)
	require.Equal(t, "0/0", got[0].Position)
	require.Len(t, got[0].Problems, 1)
	require.Contains(t, got[0].Problems[0], dlqmeta.KeyAttempts)
	require.Equal(t, "1/0", got[1].Position)
	require.Equal(t, "from another tool", string(got[1].Message.Payload))
	require.Equal(t, "y", got[1].Message.Metadata.Get("x"))
	require.Equal(t, "k", got[1].Message.Metadata.Get(dlqmeta.KeyPartitionKey))
	require.NotEmpty(t, got[1].Problems)
	require.Contains(t, got[1].Problems[0], "not written by idempo")
	require.Equal(t, "pos:"+w.DLQTopic+"/1/0", got[1].ID, "no UUID either: the position names it")
	require.Equal(t, dlqtest.Positions(got), dlqtest.Positions(dlqtest.List(t, ops, w.DLQTopic, dlqops.Filter{})))
}

// Records appended after a read began are left for the next read.
func TestReadStopsAtTheHighWatermark(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for i := range 3 {
		require.NoError(t, w.Publisher.Publish(w.DLQTopic, message.NewMessage("u"+string(rune('0'+i)), nil)))
	}
	n := 0
	require.NoError(t, w.Source.Read(context.Background(), w.DLQTopic, func(dlqops.Entry) error {
		n++
		if n == 1 {
			return w.Publisher.Publish(w.DLQTopic, message.NewMessage("late", nil))
		}
		return nil
	}))
	require.Equal(t, 3, n)
	n = 0
	require.NoError(t, w.Source.Read(context.Background(), w.DLQTopic, func(dlqops.Entry) error { n++; return nil }))
	require.Equal(t, 4, n)
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	_, err := kafkadlq.NewSource(kafka.Config{Brokers: []string{"127.0.0.1:1"}}, &kafkadlq.Options{DialTimeout: time.Second})
	require.ErrorIs(t, err, kafkadlq.ErrUnreachable)
}

// TestReplayCrashLosesNothing kills a replay with SIGKILL right after its
// first republish: no dead letter is lost, and a second replay plus
// consumption gives each event's effect at most once.
func TestReplayCrashLosesNothing(t *testing.T) {
	t.Parallel()
	prefix := "idempo-kafkadlqtest-" + watermill.NewShortUUID() + ":"
	st, rs := newRedisStores(t, prefix)
	w := newWorldWithStore(t, st, rs)
	w.ReplayCrashLosesNothing(w.Publisher, "IDEMPO_PREFIX="+prefix, "IDEMPO_KAFKA_BROKERS="+strings.Join(w.emb.Addrs(), ","))
}

// Records of a producer that sets neither an event ID nor a UUID header
// (a bare franz-go client) are dead-lettered as separate entries, spread
// over partitions, and a replay processes each once.
func TestIDLessDeadLettersReplayOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t, embedded.Config{Partitions: 3})
	w.IDLessReplayProcessesOnce(20, w.Publisher, func(payloads []string) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(w.emb.Addrs()...), kgo.AllowAutoTopicCreation())
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		recs := make([]*kgo.Record, 0, len(payloads))
		for _, p := range payloads {
			recs = append(recs, &kgo.Record{Topic: w.Topic, Value: []byte(p)})
		}
		require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
	})
}

// A replayed entry keeps its original record key, so it lands on the key's
// partition, and carries no idempo_ header but the key and the replay
// marker (count and replay ID).
func TestReplayKeepsKeyAndPartition(t *testing.T) {
	t.Parallel()
	w := newWorld(t, embedded.Config{Partitions: 4})
	w.Run()
	keys := []string{"acct-1", "acct-2", "acct-3", "acct-4", "acct-5", "acct-6"}
	// Keyed records of a producer that partitions by key as sarama does,
	// with nothing but the key to say so (no partition_key header).
	cl0, err := kgo.NewClient(kgo.SeedBrokers(w.emb.Addrs()...), kgo.AllowAutoTopicCreation(),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(func(b []byte) uint32 {
			h := fnv.New32a()
			_, _ = h.Write(b)
			return h.Sum32()
		}))))
	require.NoError(t, err)
	defer cl0.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	for i, k := range keys {
		require.NoError(t, cl0.ProduceSync(pctx, &kgo.Record{
			Topic: w.Topic, Key: []byte(k), Value: []byte("poison"),
			Headers: []kgo.RecordHeader{{Key: wire.KafkaUUIDHeader, Value: []byte("k-" + strconv.Itoa(i))}},
		}).FirstErr())
	}
	ops := w.Ops(w.Publisher)
	entries := dlqtest.WaitEntries(t, ops, w.DLQTopic, len(keys))
	origPartition := map[string]int32{}
	partitions := map[int32]bool{}
	for _, e := range entries {
		k := e.Message.Metadata.Get(dlqmeta.KeyPartitionKey)
		require.Contains(t, keys, k)
		p, err := strconv.ParseInt(e.Message.Metadata.Get(dlqmeta.KeyPartition), 10, 32)
		require.NoError(t, err)
		origPartition[k] = int32(p)
		partitions[int32(p)] = true
	}
	require.Greater(t, len(partitions), 1, "the keys spread over several partitions")

	replays := "replays_" + watermill.NewShortUUID()
	res, err := ops.Replay(context.Background(), w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{To: replays})
	require.NoError(t, err)
	require.Equal(t, len(keys), res.Replayed)

	cl, err := kgo.NewClient(kgo.SeedBrokers(w.emb.Addrs()...), kgo.ConsumeTopics(replays), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < len(keys) {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "want %d replayed records, got %d", len(keys), len(recs))
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	allowed := map[string]bool{dlqmeta.KeyPartitionKey: true, dlqmeta.KeyReplays: true, dlqmeta.KeyReplayID: true}
	for _, r := range recs {
		k := string(r.Key)
		require.Contains(t, origPartition, k, "the replay keeps its record key")
		require.Equal(t, origPartition[k], r.Partition, "the replay of %s lands on the key's partition", k)
		var idempoKeys []string
		for _, h := range r.Headers {
			if strings.HasPrefix(h.Key, "idempo_") {
				require.True(t, allowed[h.Key], "header %s is not carried into the replay", h.Key)
				idempoKeys = append(idempoKeys, h.Key)
			}
		}
		require.ElementsMatch(t, []string{dlqmeta.KeyPartitionKey, dlqmeta.KeyReplays, dlqmeta.KeyReplayID}, idempoKeys)
	}
}

// A listing beside a running replay writes nothing and the replay skips
// nothing.
func TestListBesideReplay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ListBesideReplay(w.Publisher)
}

// A record with an "id" header and no UUID (as kcat writes it), dead-
// lettered and replayed, keeps its event ID: the replay carries no UUID.
func TestReplayKeepsMetadataEventID(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayKeepsEventID(w.Publisher, dedup.FirstOf(dedup.UUID(), dedup.Metadata("id")), func(id, payload string) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(w.emb.Addrs()...), kgo.AllowAutoTopicCreation())
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{
			Topic: w.Topic, Value: []byte(payload), Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}},
		}).FirstErr())
	})
}

// An event parked past the replay cap lists, shows and replays from the
// parking topic like any dead letter.
func TestParkedEntriesAreADLQ(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ParkedEntriesAreADLQ(w.Publisher)
}

// ReadAfter reads from the offset after the one given per partition; Count
// says how many records the topic holds.
func TestReadAfterAndCount(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	for i := range 4 {
		require.NoError(t, w.Publisher.Publish(w.DLQTopic, message.NewMessage("u"+string(rune('0'+i)), nil)))
	}
	src := w.Source.(*kafkadlq.Source)
	n, err := src.Count(ctx, w.DLQTopic)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	var all []string
	require.NoError(t, src.Read(ctx, w.DLQTopic, func(e dlqops.Entry) error { all = append(all, e.Position); return nil }))
	require.Len(t, all, 4)
	part, _, _ := strings.Cut(all[1], "/")
	var got []string
	require.NoError(t, src.ReadAfter(ctx, w.DLQTopic, map[string]int64{part: 1}, func(e dlqops.Entry) error { got = append(got, e.Position); return nil }))
	var want []string
	for _, p := range all {
		pp, off, _ := strings.Cut(p, "/")
		if o, _ := strconv.Atoi(off); pp != part || o > 1 {
			want = append(want, p)
		}
	}
	require.Equal(t, want, got)
	_, err = src.Count(ctx, "no_such_topic_"+strings.Repeat("x", 3))
	require.ErrorIs(t, err, kafkadlq.ErrNoTopic)

	require.NoError(t, w.Publisher.Publish("not_a_dead_letter_topic", message.NewMessage("x", nil)))
	topics, err := src.Topics(ctx, ".dlq")
	require.NoError(t, err)
	require.Contains(t, topics, w.DLQTopic)
	for _, tp := range topics {
		require.True(t, strings.HasSuffix(tp, ".dlq"), tp)
	}
	all, err = src.Topics(ctx, "")
	require.NoError(t, err)
	require.Contains(t, all, "not_a_dead_letter_topic")
	require.NotContains(t, topics, "not_a_dead_letter_topic")
}
