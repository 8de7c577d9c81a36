package kafka_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// keyedSetup is one embedded cluster, a publisher and a topic for the
// ordering tests.
type keyedSetup struct {
	e     *embedded.Cluster
	pub   message.Publisher
	topic string
	group string
}

func newKeyedSetup(t *testing.T, partitions int) keyedSetup {
	t.Helper()
	topic := uniqueName("keyed")
	e := startEmbedded(t, embedded.Config{Partitions: partitions, Topics: []string{topic}})
	return keyedSetup{e: e, pub: newPublisher(t, e.Config("")), topic: topic, group: uniqueName("group")}
}

// config is a subscriber config for s's group in ordering, committing often.
func (s keyedSetup) config(ordering kafka.Ordering) kafka.Config {
	cfg := s.e.Config(s.group)
	cfg.Ordering = ordering
	cfg.AutoCommitInterval = 20 * time.Millisecond
	return cfg
}

// publish sends one message per key, in order, with payload "key/n" where n
// counts that key's messages.
func (s keyedSetup) publish(t *testing.T, keys ...string) {
	t.Helper()
	seq := map[string]int{}
	for _, k := range keys {
		seq[k]++
		m := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "%s/%d", k, seq[k]))
		m.Metadata.Set(kafka.PartitionKeyMetadata, k)
		require.NoError(t, s.pub.Publish(s.topic, m))
	}
}

// committed is the group's committed offset of partition 0 (-1 for none).
func (s keyedSetup) committed(t *testing.T) int64 {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_1_0_0
	admin, err := sarama.NewClusterAdmin(s.e.Addrs(), sc)
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	resp, err := admin.ListConsumerGroupOffsets(s.group, map[string][]int32{s.topic: {0}})
	require.NoError(t, err)
	block := resp.GetBlock(s.topic, 0)
	require.NotNil(t, block, "no offset block for partition 0")
	return block.Offset
}

func offsetOf(t *testing.T, m *message.Message) int64 {
	t.Helper()
	o, err := strconv.ParseInt(m.Metadata.Get(dlqmeta.KeyOffset), 10, 64)
	require.NoError(t, err, "offset metadata")
	return o
}

// take reads n messages from ch without settling them, or fails after timeout.
func take(t *testing.T, ch <-chan *message.Message, n int, timeout time.Duration) []*message.Message {
	t.Helper()
	var got []*message.Message
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case m, ok := <-ch:
			require.True(t, ok, "channel closed after %d of %d messages", len(got), n)
			got = append(got, m)
		case <-deadline:
			require.FailNowf(t, "timeout", "received %d of %d messages", len(got), n)
		}
	}
	return got
}

func offsets(t *testing.T, msgs []*message.Message) []int64 {
	t.Helper()
	var out []int64
	for _, m := range msgs {
		out = append(out, offsetOf(t, m))
	}
	slices.Sort(out)
	return out
}

func byOffset(t *testing.T, msgs []*message.Message, off int64) *message.Message {
	t.Helper()
	for _, m := range msgs {
		if offsetOf(t, m) == off {
			return m
		}
	}
	require.FailNowf(t, "missing", "no message at offset %d", off)
	return nil
}

// The committed offset never passes an unsettled message: with every message
// but offset 2 acked, the group's offset stays at 2, and a new member after
// the old one is gone gets offsets 2..9 again and nothing before.
func TestKeyOrderWatermark(t *testing.T) {
	t.Parallel()
	for _, ordering := range []kafka.Ordering{kafka.KeyOrder, kafka.Unordered} {
		t.Run(map[kafka.Ordering]string{kafka.KeyOrder: "key", kafka.Unordered: "unordered"}[ordering], func(t *testing.T) {
			t.Parallel()
			s := newKeyedSetup(t, 1)
			s.publish(t, "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9")
			sub, err := kafka.NewSubscriber(s.config(ordering), nil)
			require.NoError(t, err)
			got := take(t, subscribe(t, sub, s.topic), 10, time.Minute)
			require.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, offsets(t, got))

			byOffset(t, got, 0).Ack()
			byOffset(t, got, 1).Ack()
			waitCommitted(t, s, 2)
			for off := int64(3); off < 10; off++ {
				byOffset(t, got, off).Ack()
			}
			// Many commit intervals later the offset still waits for 2.
			for range 10 {
				time.Sleep(30 * time.Millisecond)
				require.Equal(t, int64(2), s.committed(t), "committed offset passed the unsettled offset 2")
			}
			require.NoError(t, sub.Close())

			again := newSubscriber(t, s.config(ordering))
			redelivered := take(t, subscribe(t, again, s.topic), 8, time.Minute)
			require.Equal(t, []int64{2, 3, 4, 5, 6, 7, 8, 9}, offsets(t, redelivered))
		})
	}
}

func waitCommitted(t *testing.T, s keyedSetup, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := s.committed(t)
		if got == want {
			return
		}
		require.Less(t, got, want+1, "committed offset passed %d", want)
		if time.Now().After(deadline) {
			require.FailNowf(t, "timeout", "committed offset is %d, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A nacked message comes back after NackDelay; meanwhile other keys go on,
// and the later messages of its key wait behind it.
func TestKeyOrderNackHoldsKey(t *testing.T) {
	t.Parallel()
	s := newKeyedSetup(t, 1)
	s.publish(t, "a", "b", "a", "b", "c")
	cfg := s.config(kafka.KeyOrder)
	cfg.NackDelay = time.Second
	ch := subscribe(t, newSubscriber(t, cfg), s.topic)

	var order []string
	nacked := false
	deadline := time.After(time.Minute)
	for len(order) < 6 {
		select {
		case m := <-ch:
			p := string(m.Payload)
			order = append(order, p)
			if p == "a/1" && !nacked {
				nacked = true
				m.Nack()
				continue
			}
			m.Ack()
		case <-deadline:
			require.FailNowf(t, "timeout", "deliveries so far: %v", order)
		}
	}
	var ofA []string
	for _, p := range order {
		if p[0] == 'a' {
			ofA = append(ofA, p)
		}
	}
	require.Equal(t, []string{"a/1", "a/1", "a/2"}, ofA, "key a out of order: %v", order)
	// b and c went on during a/1's pause: all before its redelivery.
	first := slices.Index(order, "a/1")
	redelivery := first + 1 + slices.Index(order[first+1:], "a/1")
	for _, p := range []string{"b/1", "b/2", "c/1"} {
		require.Less(t, slices.Index(order, p), redelivery, "%s waited for key a: %v", p, order)
	}
}

// With MaxInFlight messages unsettled, nothing more of the partition is
// handed out; settling one lets exactly one more through.
func TestKeyOrderMaxInFlight(t *testing.T) {
	t.Parallel()
	s := newKeyedSetup(t, 1)
	s.publish(t, "k0", "k1", "k2", "k3", "k4", "k5")
	cfg := s.config(kafka.KeyOrder)
	cfg.MaxInFlight = 3
	ch := subscribe(t, newSubscriber(t, cfg), s.topic)

	held := take(t, ch, 3, time.Minute)
	select {
	case m := <-ch:
		require.FailNowf(t, "over MaxInFlight", "a 4th message (offset %d) arrived with 3 unsettled", offsetOf(t, m))
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Ack()
	next := take(t, ch, 1, time.Minute)
	select {
	case m := <-ch:
		require.FailNowf(t, "over MaxInFlight", "a 5th message (offset %d) arrived with 3 unsettled", offsetOf(t, m))
	case <-time.After(500 * time.Millisecond):
	}
	for _, m := range append(held[1:], next...) {
		m.Ack()
	}
	receive(t, ch, 2, time.Minute)
}

// Unordered hands out messages of one key at once.
func TestUnorderedIgnoresKeys(t *testing.T) {
	t.Parallel()
	s := newKeyedSetup(t, 1)
	s.publish(t, "a", "a", "a")
	ch := subscribe(t, newSubscriber(t, s.config(kafka.Unordered)), s.topic)
	for _, m := range take(t, ch, 3, time.Minute) {
		m.Ack()
	}
}

// Close cancels the contexts of messages handed out and not settled,
// returns within 5 s and commits the watermark: a new member gets those
// messages again, not the acked one before them.
func TestKeyOrderCloseCancelsInFlight(t *testing.T) {
	t.Parallel()
	s := newKeyedSetup(t, 1)
	s.publish(t, "k0", "k1", "k2")
	sub, err := kafka.NewSubscriber(s.config(kafka.KeyOrder), nil)
	require.NoError(t, err)
	got := take(t, subscribe(t, sub, s.topic), 3, time.Minute)
	byOffset(t, got, 0).Ack()

	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	for _, off := range []int64{1, 2} {
		select {
		case <-byOffset(t, got, off).Context().Done():
		case <-time.After(5 * time.Second):
			require.FailNowf(t, "not cancelled", "offset %d: context not cancelled 5 s into Close", off)
		}
	}
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Close did not return within 5 s with unsettled messages")
	}
	again := take(t, subscribe(t, newSubscriber(t, s.config(kafka.KeyOrder)), s.topic), 2, time.Minute)
	require.Equal(t, []int64{1, 2}, offsets(t, again))
}

// On a rebalance, the revoked claims cancel their unsettled messages and
// return within 5 s: a second member joins and the messages are handed out
// again.
func TestKeyOrderRebalanceCancelsInFlight(t *testing.T) {
	t.Parallel()
	s := newKeyedSetup(t, 2)
	s.publish(t, "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7")
	first := newSubscriber(t, s.config(kafka.KeyOrder))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch1, err := first.Subscribe(ctx, s.topic)
	require.NoError(t, err)
	held := take(t, ch1, 8, time.Minute)

	ch2 := subscribe(t, newSubscriber(t, s.config(kafka.KeyOrder)), s.topic)
	for _, m := range held {
		select {
		case <-m.Context().Done():
		case <-time.After(20 * time.Second): // the join itself takes a few seconds
			require.FailNowf(t, "not cancelled", "offset %d: context not cancelled by the rebalance", offsetOf(t, m))
		}
	}
	// Every message comes again, on one member or the other.
	var again []*message.Message
	deadline := time.After(time.Minute)
	for len(again) < 8 {
		select {
		case m := <-ch1:
			m.Ack()
			again = append(again, m)
		case m := <-ch2:
			m.Ack()
			again = append(again, m)
		case <-deadline:
			require.FailNowf(t, "timeout", "%d of 8 messages handed out again", len(again))
		}
	}
}
