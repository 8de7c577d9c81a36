package kafkadlq_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/kafkadlq"
)

// TestReplayOnKafkaProcessesOnce runs the whole flow on the embedded
// cluster: poison events land in the DLQ topic; after the fix, a replay
// processes each exactly once, however often it is repeated or redelivered.
func TestReplayOnKafkaProcessesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayProcessesOnce(w.Publisher, func(t *testing.T, i int, e dlq.Entry) {
		require.Equal(t, "0/"+[]string{"0", "1", "2"}[i], e.Position)
		require.Equal(t, []string{"0", "2", "4"}[i], e.Message.Metadata.Get(dlq.KeyOffset), "the original's offset survives")
	})
}

// Records written by other tools, or with damaged idempo metadata, are
// listed with their problems, across partitions in partition order; a
// missing topic is a clear error and an empty topic lists nothing.
func TestForeignAndMalformedEntries(t *testing.T) {
	t.Parallel()
	empty := "empty_topic"
	w := newWorld(t, kafka.WithPartitions(2), kafka.WithTopics(empty))
	ops := w.Ops(nil)
	ctx := context.Background()

	err := ops.List(ctx, "no_such_topic", dlq.Filter{}, func(dlq.Entry) error { return nil })
	require.ErrorIs(t, err, kafkadlq.ErrNoTopic)
	require.ErrorContains(t, err, "no_such_topic")
	require.Empty(t, dlqtest.List(t, ops, empty, dlq.Filter{}))

	cl, err := kgo.NewClient(kgo.SeedBrokers(w.emb.Addrs()...), kgo.AllowAutoTopicCreation(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx,
		&kgo.Record{Topic: w.DLQTopic, Partition: 1, Key: []byte("k"), Value: []byte("from another tool"), Headers: []kgo.RecordHeader{{Key: "x", Value: []byte("y")}}},
		&kgo.Record{Topic: w.DLQTopic, Partition: 0, Value: []byte("bad"), Headers: []kgo.RecordHeader{
			{Key: dlq.KeyEntryID, Value: []byte("entry-bad")},
			{Key: dlq.KeyAttempts, Value: []byte("abc")},
		}},
	).FirstErr())

	got := dlqtest.List(t, ops, w.DLQTopic, dlq.Filter{})
	require.Len(t, got, 2)
	require.Equal(t, "entry-bad", got[0].ID)
	require.Equal(t, "0/0", got[0].Position)
	require.Len(t, got[0].Problems, 1)
	require.Contains(t, got[0].Problems[0], dlq.KeyAttempts)
	require.Equal(t, "1/0", got[1].Position)
	require.Equal(t, "from another tool", string(got[1].Message.Payload))
	require.Equal(t, "y", got[1].Message.Metadata.Get("x"))
	require.Equal(t, "k", got[1].Message.Metadata.Get(dlq.KeyPartitionKey))
	require.NotEmpty(t, got[1].Problems)
	require.Contains(t, got[1].Problems[0], "not written by idempo")
	require.Equal(t, "pos:"+w.DLQTopic+"/1/0", got[1].ID, "no UUID either: the position names it")
	require.Equal(t, dlqtest.Positions(got), dlqtest.Positions(dlqtest.List(t, ops, w.DLQTopic, dlq.Filter{})))
}

// Records appended after a read began are left for the next read.
func TestReadStopsAtTheHighWatermark(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for i := range 3 {
		require.NoError(t, w.Publisher.Publish(w.DLQTopic, message.NewMessage("u"+string(rune('0'+i)), nil)))
	}
	n := 0
	require.NoError(t, w.Source.Read(context.Background(), w.DLQTopic, func(dlq.Entry) error {
		n++
		if n == 1 {
			return w.Publisher.Publish(w.DLQTopic, message.NewMessage("late", nil))
		}
		return nil
	}))
	require.Equal(t, 3, n)
	n = 0
	require.NoError(t, w.Source.Read(context.Background(), w.DLQTopic, func(dlq.Entry) error { n++; return nil }))
	require.Equal(t, 4, n)
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	_, err := kafkadlq.NewSource([]string{"127.0.0.1:1"}, kafkadlq.WithDialTimeout(time.Second))
	require.ErrorIs(t, err, kafkadlq.ErrUnreachable)
}
