package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
)

// BenchmarkOrdering compares the orderings' cost per message with a
// consumer that acks at once (4 partitions, 1000 keys): the subscriber's own
// overhead, without the idempo stack.
func BenchmarkOrdering(b *testing.B) {
	for _, o := range []struct {
		name     string
		ordering kafka.Ordering
	}{{"partition", kafka.PartitionOrder}, {"key", kafka.KeyOrder}, {"unordered", kafka.Unordered}} {
		b.Run(o.name, func(b *testing.B) {
			topic := uniqueName("bench")
			e, err := embedded.Start(embedded.Config{Partitions: 4, Topics: []string{topic}})
			require.NoError(b, err)
			defer e.Close()
			pub, err := kafka.NewPublisher(e.Config(""), nil)
			require.NoError(b, err)
			defer func() { _ = pub.Close() }()
			n := b.N
			msgs := make([]*message.Message, n)
			for i := range msgs {
				msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
				msgs[i].Metadata.Set(kafka.PartitionKeyMetadata, "k"+strconv.Itoa(i%1000))
			}
			for i := 0; i < n; i += 500 {
				require.NoError(b, pub.Publish(topic, msgs[i:min(i+500, n)]...))
			}
			cfg := e.Config(uniqueName("group"))
			cfg.Ordering = o.ordering
			sub, err := kafka.NewSubscriber(cfg, nil)
			require.NoError(b, err)
			defer func() { _ = sub.Close() }()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := sub.Subscribe(ctx, topic)
			require.NoError(b, err)
			timeout := time.After(5 * time.Minute)
			for i := range n {
				select {
				case m := <-ch:
					if i == 0 {
						b.ResetTimer()
					}
					m.Ack()
				case <-timeout:
					b.Fatalf("received %d of %d messages", i, n)
				}
			}
			b.StopTimer()
		})
	}
}
