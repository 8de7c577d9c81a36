package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/idempo/idempo/broker/kafka"
)

// The preset's publisher and subscriber authenticate with each SASL
// mechanism against a cluster that requires it, configured once in Config
// (here from a URL's user info); a wrong password fails without printing it.
func TestSASL(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{kafka.SASLPlain, kafka.SASLScramSHA256, kafka.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.EnableSASL(),
				kfake.Superuser(mech, "alice", "s3cret-pw"))
			require.NoError(t, err)
			t.Cleanup(c.Close)
			addr := c.ListenAddrs()[0]

			cfg, err := kafka.ParseURL("kafka://alice:s3cret-pw@" + addr + "?sasl=" + mech)
			require.NoError(t, err)
			pub, err := kafka.NewPublisher(cfg, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = pub.Close() })
			topic := uniqueName("sasl")
			require.NoError(t, pub.Publish(topic, message.NewMessage("m1", []byte("hello"))))

			cfg.ConsumerGroup = uniqueName("group")
			sub, err := kafka.NewSubscriber(cfg, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			msgs, err := sub.Subscribe(ctx, topic)
			require.NoError(t, err)
			select {
			case m := <-msgs:
				require.Equal(t, "hello", string(m.Payload))
				m.Ack()
			case <-ctx.Done():
				t.Fatal("no message within 60s through an authenticated subscriber")
			}

			wrong := kafka.Config{Brokers: []string{addr}, SASL: &kafka.SASL{Mechanism: mech, User: "alice", Password: "not-the-pw"}}
			bad, err := kafka.NewPublisher(wrong, nil)
			if err == nil {
				err = bad.Publish(topic, message.NewMessage("m2", nil))
				_ = bad.Close()
			}
			require.Error(t, err, "a wrong password is refused")
			require.NotContains(t, err.Error(), "not-the-pw")
		})
	}
}
