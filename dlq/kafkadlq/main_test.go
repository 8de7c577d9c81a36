package kafkadlq_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/kafkadlq"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// sarama's metrics library starts one process-wide ticker goroutine
		// the first time a meter is created; it never stops, by design.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

func startEmbedded(t *testing.T, opts ...kafka.EmbeddedOption) *kafka.Embedded {
	t.Helper()
	e, err := kafka.StartEmbedded(opts...)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

func newSource(t *testing.T, e *kafka.Embedded) *kafkadlq.Source {
	t.Helper()
	s, err := kafkadlq.NewSource(e.Addrs())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// world is one consumer under test in a consumer group of an embedded
// cluster, its dedup store in memory.
type world struct {
	*dlqtest.World
	emb *kafka.Embedded
}

func newWorld(t *testing.T, opts ...kafka.EmbeddedOption) *world {
	t.Helper()
	w := &world{emb: startEmbedded(t, opts...)}
	pub, err := kafka.NewPublisher(w.emb.Config(""), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	w.World = dlqtest.NewWorld(t, "orders_"+watermill.NewShortUUID(), dlqtest.Backend{
		Store: memstore.New(nil), Source: newSource(t, w.emb), Publisher: pub, DLQPublisher: pub,
		NewSubscriber: func() (message.Subscriber, error) { return kafka.NewSubscriber(w.emb.Config(dlqtest.Handler), nil) },
	})
	return w
}
