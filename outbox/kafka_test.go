package outbox_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// TestRelayToKafka: a relay on PostgreSQL publishes through the Kafka
// preset (embedded cluster, 4 partitions); the outbox key is the partition
// key, so each key's rows arrive in commit order.
func TestRelayToKafka(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sqlstore.Postgres, nil)
	topic := randomName("outbox_")
	cluster, err := embedded.Start(embedded.Config{Partitions: 4, Topics: []string{topic}})
	require.NoError(t, err)
	defer cluster.Close()
	pub, err := kafka.NewPublisher(cluster.Config(""), nil)
	require.NoError(t, err)
	sub, err := kafka.NewSubscriber(cluster.Config(randomName("g-")), nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, sub.Close()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)

	const keys, perKey = 8, 25
	for s := range perKey {
		ms := make([]*message.Message, keys)
		for k := range ms {
			ms[k] = msg(fmtKey(k), s)
		}
		e.write(t, topic, ms...)
	}
	_, stop := runRelay(t, e.ob, fast(pub))
	var mu sync.Mutex
	var got []published
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range msgs {
			seq, _ := strconv.Atoi(m.Metadata.Get("seq"))
			mu.Lock()
			got = append(got, published{uuid: m.UUID, key: m.Metadata.Get(kafka.PartitionKeyMetadata), seq: seq})
			mu.Unlock()
			m.Ack()
		}
	}()
	waitFor(t, 90*time.Second, "every row consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= keys*perKey
	})
	stop()
	require.NoError(t, pub.Close())
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]bool{}
	for _, p := range got {
		seen[p.uuid] = true
	}
	require.Len(t, seen, keys*perKey)
	checkKeyOrder(t, got)
}
