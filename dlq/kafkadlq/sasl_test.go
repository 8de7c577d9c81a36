package kafkadlq_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/kafkadlq"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// The DLQ tools reach a cluster that requires SASL with the same Config as
// the preset: credentials are given once.
func TestSourceSASL(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.EnableSASL(),
		kfake.Superuser(kafka.SASLScramSHA256, "ops", "pw-123456"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cfg := kafka.Config{Brokers: c.ListenAddrs(), SASL: &kafka.SASL{Mechanism: kafka.SASLScramSHA256, User: "ops", Password: "pw-123456"}}

	pub, err := kafka.NewPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	m := message.NewMessage("copy-1", []byte("poison"))
	m.Metadata.Set(dlqmeta.KeyEntryID, "copy-1")
	m.Metadata.Set(dlqmeta.KeyOriginalTopic, "orders")
	require.NoError(t, pub.Publish("orders.dlq", m))

	src, err := kafkadlq.NewSource(cfg, &kafkadlq.Options{DialTimeout: 30 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ids []string
	require.NoError(t, src.Read(ctx, "orders.dlq", func(e dlqops.Entry) error { ids = append(ids, e.ID); return nil }))
	require.Equal(t, []string{"copy-1"}, ids)

	wrong := cfg
	wrong.SASL = &kafka.SASL{Mechanism: kafka.SASLScramSHA256, User: "ops", Password: "nope-nope"}
	_, err = kafkadlq.NewSource(wrong, &kafkadlq.Options{DialTimeout: 5 * time.Second})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "nope-nope")
}
