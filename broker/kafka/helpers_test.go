package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
)

// startEmbedded starts a private cluster for one test.
func startEmbedded(t *testing.T, cfg ...embedded.Config) *embedded.Cluster {
	t.Helper()
	var c embedded.Config
	if len(cfg) > 0 {
		c = cfg[0]
	}
	e, err := embedded.Start(c)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

func uniqueName(prefix string) string {
	return prefix + "_" + watermill.NewShortUUID()
}

func newPublisher(t *testing.T, cfg kafka.Config) message.Publisher {
	t.Helper()
	p, err := kafka.NewPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func newSubscriber(t *testing.T, cfg kafka.Config) message.Subscriber {
	t.Helper()
	s, err := kafka.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// receive reads n messages from ch, acking each, or fails the test after timeout.
func receive(t *testing.T, ch <-chan *message.Message, n int, timeout time.Duration) []*message.Message {
	t.Helper()
	var got []*message.Message
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case m, ok := <-ch:
			require.True(t, ok, "channel closed after %d of %d messages", len(got), n)
			m.Ack()
			got = append(got, m)
		case <-deadline:
			require.FailNowf(t, "timeout", "received %d of %d messages", len(got), n)
		}
	}
	return got
}

func subscribe(t *testing.T, s message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	require.NoError(t, err)
	return ch
}
