package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
)

// A consumer killed while its JoinGroup waits for a rebalance to complete
// never gets the answer. Kafka then drops it from the group when its session
// times out; the embedded cluster on its own kept it for good, with the
// partitions the group's leader assigned to it, which nobody then consumed.
// The embedded cluster must drop it too, so that the group's live member
// ends up with every partition.
func TestMemberKilledDuringJoinIsDropped(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, embedded.Config{Partitions: 2})
	topic, group := uniqueName("ghost"), uniqueName("group")
	pub := newPublisher(t, e.Config(""))
	publish := func(from, n int) {
		for i := from; i < from+n; i++ {
			m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
			m.Metadata.Set(kafka.PartitionKeyMetadata, strconv.Itoa(i))
			require.NoError(t, pub.Publish(topic, m))
		}
	}
	publish(0, 20)

	cfg := e.Config(group)
	cfg.ConfigureSarama = func(c *sarama.Config) {
		c.Consumer.Group.Session.Timeout = 6 * time.Second
		c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	}
	cfg.RebalanceTimeout = 10 * time.Second
	ch := subscribe(t, newSubscriber(t, cfg), topic)
	receive(t, ch, 20, time.Minute)

	// Rounds of a doomed member: a JoinGroup for the same group and topic,
	// whose connection closes before the rebalance it started completes. The
	// cluster answers such a JoinGroup at random either way (it picks between
	// a closed connection and a free buffer), and only an unanswered member
	// stays; a rebalance drops it, but nothing starts one. Four rounds make
	// one unanswered member near certain (15 in 16).
	for round := range 4 {
		killedDuringJoin(t, e.Addrs(), group, topic)
		// The live member rejoins at its next heartbeat, and the rebalance
		// completes with both members.
		time.Sleep(2 * time.Second)
		// Messages on both partitions: the live member must get them all,
		// once the doomed member's session (6 s) has run out.
		publish(20*(round+1), 20)
		receive(t, ch, 20, 20*time.Second)
	}
}

func killedDuringJoin(t *testing.T, addrs []string, group, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.MaxVersions(kversion.V2_1_0()))
	if !assert.NoError(t, err) {
		return
	}
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group = group
	req.SessionTimeoutMillis = 6000
	req.RebalanceTimeoutMillis = 10000
	req.ProtocolType = "consumer"
	for _, name := range []string{"range", "roundrobin", "sticky"} {
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name = name
		p.Metadata = meta.AppendTo(nil)
		req.Protocols = append(req.Protocols, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = req.RequestWith(ctx, cl)
	assert.Error(t, err, "the JoinGroup waits for the live member to rejoin")
	cl.Close()
}
