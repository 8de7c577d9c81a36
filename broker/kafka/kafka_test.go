package kafka_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/internal/dlqmeta"
)

func TestPublishSubscribeWithKey(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, embedded.Config{Partitions: 3})
	topic := uniqueName("keyed")
	pub := newPublisher(t, e.Config(""))

	const n = 30
	for i := range n {
		msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		msg.Metadata.Set(kafka.PartitionKeyMetadata, fmt.Sprintf("key-%d", i%3))
		msg.Metadata.Set("seq", strconv.Itoa(i))
		require.NoError(t, pub.Publish(topic, msg))
	}

	sub := newSubscriber(t, e.Config(uniqueName("group")))
	got := receive(t, subscribe(t, sub, topic), n, time.Minute)

	partitionOfKey := map[string]string{}
	lastSeqOfKey := map[string]int{}
	for _, m := range got {
		key := m.Metadata.Get(dlqmeta.KeyPartitionKey)
		require.NotEmpty(t, key)
		p := m.Metadata.Get(dlqmeta.KeyPartition)
		if prev, ok := partitionOfKey[key]; ok {
			require.Equal(t, prev, p, "one key, one partition")
		}
		partitionOfKey[key] = p
		require.NotEmpty(t, m.Metadata.Get(dlqmeta.KeyOffset))
		seq, err := strconv.Atoi(m.Metadata.Get("seq"))
		require.NoError(t, err)
		if last, ok := lastSeqOfKey[key]; ok {
			require.Greater(t, seq, last, "order per key is kept")
		}
		lastSeqOfKey[key] = seq
	}
	require.Len(t, partitionOfKey, 3)
}

// A group that joins after messages were published still gets them
// (Offsets.Initial = oldest), and a nacked message comes back.
func TestLateGroupAndNack(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	topic := uniqueName("late")
	pub := newPublisher(t, e.Config(""))
	want := message.NewMessage(watermill.NewUUID(), []byte("x"))
	require.NoError(t, pub.Publish(topic, want))

	cfg := e.Config(uniqueName("group"))
	cfg.NackDelay = 10 * time.Millisecond
	ch := subscribe(t, newSubscriber(t, cfg), topic)

	select {
	case m := <-ch:
		require.Equal(t, want.UUID, m.UUID)
		m.Nack()
	case <-time.After(time.Minute):
		t.Fatal("timeout waiting for the first delivery")
	}
	again := receive(t, ch, 1, time.Minute)
	require.Equal(t, want.UUID, again[0].UUID)
}

// Closing a subscriber and opening a new one in the same group loses
// nothing, and a clean close commits what was acked.
func TestConsumerRestart(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	topic := uniqueName("restart")
	group := uniqueName("group")
	pub := newPublisher(t, e.Config(""))

	const n = 40
	published := map[string]bool{}
	for range n {
		m := message.NewMessage(watermill.NewUUID(), []byte("x"))
		published[m.UUID] = true
		require.NoError(t, pub.Publish(topic, m))
	}

	sub1, err := kafka.NewSubscriber(e.Config(group), nil)
	require.NoError(t, err)
	ch1, err := sub1.Subscribe(t.Context(), topic)
	require.NoError(t, err)
	first := receive(t, ch1, n/2, time.Minute)
	require.NoError(t, sub1.Close())

	acked := map[string]bool{}
	for _, m := range first {
		acked[m.UUID] = true
	}

	sub2 := newSubscriber(t, e.Config(group))
	ch2 := subscribe(t, sub2, topic)
	seen := map[string]bool{}
	repeated := 0
	deadline := time.After(time.Minute)
	for len(seen)+len(acked) < n || !allSeen(published, acked, seen) {
		select {
		case m := <-ch2:
			m.Ack()
			if acked[m.UUID] {
				repeated++
				continue
			}
			seen[m.UUID] = true
		case <-deadline:
			t.Fatalf("lost messages: %d acked before restart, %d after, %d published", len(acked), len(seen), n)
		}
	}
	// The last ack may race with Close; anything more means the clean close
	// did not commit.
	require.LessOrEqual(t, repeated, 1, "messages acked before a clean close were delivered again")
}

func allSeen(published, a, b map[string]bool) bool {
	for id := range published {
		if !a[id] && !b[id] {
			return false
		}
	}
	return true
}

// Newer protocol versions than the default work against the embedded
// cluster too: a consumer group at each reads what a producer at it wrote.
func TestProtocolVersions(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	for _, v := range []string{"2.1.0", "2.4.0", "2.8.0", "3.6.0"} {
		t.Run(v, func(t *testing.T) {
			cfg := e.Config("")
			cfg.Version = v
			topic := uniqueName("version")
			pub := newPublisher(t, cfg)
			sent := message.NewMessage(watermill.NewUUID(), []byte("v"+v))
			require.NoError(t, pub.Publish(topic, sent))
			cfg.ConsumerGroup = uniqueName("group")
			got := receive(t, subscribe(t, newSubscriber(t, cfg), topic), 1, time.Minute)
			require.Equal(t, sent.UUID, got[0].UUID)
			require.Equal(t, sent.Payload, got[0].Payload)
		})
	}
}
