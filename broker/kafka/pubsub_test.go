package kafka_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
)

// TestPubSub runs Watermill's universal Pub/Sub suite against the preset on
// the embedded cluster (one partition per topic, so order is total), in each
// ordering; records without a key are one key, so KeyOrder keeps the
// partition's order too.
func TestPubSub(t *testing.T) {
	t.Parallel()
	runPubSubSuite(t, kafka.PartitionOrder, true)
}

func TestPubSubKeyOrder(t *testing.T) {
	t.Parallel()
	runPubSubSuite(t, kafka.KeyOrder, true)
}

func TestPubSubUnordered(t *testing.T) {
	t.Parallel()
	runPubSubSuite(t, kafka.Unordered, false)
}

func runPubSubSuite(t *testing.T, ordering kafka.Ordering, ordered bool) {
	e := startEmbedded(t)
	constructor := suiteConstructor(e, ordering)
	tests.TestPubSub(t,
		tests.Features{
			ConsumerGroups:  true,
			GuaranteedOrder: ordered,
			Persistent:      true,
			// Kafka redelivers after a crash, never exactly once.
			ExactlyOnceDelivery: false,
			// With a consumer group a new subscriber continues from the
			// group's committed offsets; it does not re-read old messages.
			NewSubscriberReceivesOldMessages: false,
			// The embedded cluster cannot be restarted under the suite's
			// clients: TestReconnect is skipped.
			RestartServiceCommand: nil,
		},
		// One group per test (and per topic, see groupPerTopic).
		func(t *testing.T) (message.Publisher, message.Subscriber) { return constructor(t, "test_"+t.Name()) },
		constructor,
	)
}

// suiteConstructor builds the publisher and subscriber the universal suite
// runs on: the preset's, with a short NackDelay, and each topic
// subscribed in a consumer group of its own (see groupPerTopic).
func suiteConstructor(e *embedded.Cluster, ordering kafka.Ordering) func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
	return func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := kafka.NewPublisher(e.Config(""), nil)
		require.NoError(t, err)
		subCfg := e.Config(group)
		subCfg.Ordering = ordering
		// TestContinueAfterErrors nacks 300 times in a row; at the default
		// NackDelay (500 ms) that alone takes 150 s. Nack pacing is
		// covered by TestLateGroupAndNack.
		subCfg.NackDelay = 10 * time.Millisecond
		sub := &groupPerTopic{cfg: subCfg}
		// TestPublishSubscribeInOrder never closes its subscribers (its
		// deferred Close runs before Subscribe); close everything the suite
		// opened when its test ends. Close is idempotent.
		t.Cleanup(func() {
			_ = sub.Close()
			_ = pub.Close()
		})
		return pub, sub
	}
}

// groupPerTopic is a subscriber that subscribes each topic in its own
// consumer group, named after the configured group and the topic: two
// subscribers of one topic with one group still share its partitions.
//
// The suite's TestTopic subscribes two topics on one subscriber and reads
// them in turn, the second only once the first has delivered. Watermill's
// Kafka subscriber runs one group member per Subscribe, and a member cannot
// leave its session for a rebalance while it holds a message nobody has read
// (the hand-over waits for the reader, not for the session). With one group
// for both topics, a loaded machine can let the second topic's member finish
// its join and take a message first; the first topic's join then starts a
// rebalance that waits for that member, which waits for a reader, which waits
// for the first topic: nothing arrives until the rebalance timeout (60 s)
// drops the member, far past the suite's 15 s. TestTopicsReadInTurn forces
// that order. Separate groups never rebalance each other.
type groupPerTopic struct {
	cfg kafka.Config

	mu     sync.Mutex
	subs   []message.Subscriber
	closed bool
}

func (g *groupPerTopic) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, kafka.ErrClosed
	}
	cfg := g.cfg
	cfg.ConsumerGroup += "_" + topic
	sub, err := kafka.NewSubscriber(cfg, nil)
	if err != nil {
		return nil, err
	}
	g.subs = append(g.subs, sub)
	return sub.Subscribe(ctx, topic)
}

func (g *groupPerTopic) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	var errs []error
	for _, s := range g.subs {
		errs = append(errs, s.Close())
	}
	g.subs = nil
	return errors.Join(errs...)
}

// TestTopicsReadInTurn is TestTopic of the universal suite with the order a
// loaded machine can produce: the second topic's subscription has its message
// in hand, unread, before the first topic is subscribed; the first topic's
// message must still arrive within the suite's wait (15 s).
func TestTopicsReadInTurn(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	pub, sub := suiteConstructor(e, kafka.PartitionOrder)(t, uniqueName("test"))
	topic1, topic2 := uniqueName("topic1"), uniqueName("topic2")
	msg1 := message.NewMessage(watermill.NewUUID(), []byte("x"))
	msg2 := message.NewMessage(watermill.NewUUID(), []byte("x"))
	require.NoError(t, pub.Publish(topic1, msg1))
	require.NoError(t, pub.Publish(topic2, msg2))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch2, err := sub.Subscribe(ctx, topic2)
	require.NoError(t, err)
	var held *message.Message
	select {
	case held = <-ch2: // in hand, not acked: the member keeps its session
	case <-time.After(time.Minute):
		require.FailNow(t, "topic2: no message within a minute")
	}

	ch1, err := sub.Subscribe(ctx, topic1)
	require.NoError(t, err)
	select {
	case m := <-ch1:
		m.Ack()
		require.Equal(t, msg1.UUID, m.UUID)
	case <-time.After(15 * time.Second): // the suite's defaultTimeout
		require.FailNow(t, "topic1: no message within 15 s while topic2's message is held")
	}
	held.Ack()
	require.Equal(t, msg2.UUID, held.UUID)
}
