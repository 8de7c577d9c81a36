package amqp_test

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
)

// brokerURL is the shared RabbitMQ the tests use: IDEMPO_AMQP_URL or
// amqp://guest:guest@127.0.0.1:5672/.
func brokerURL() string {
	if u := os.Getenv("IDEMPO_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// requireBroker fails the test (it does not skip) when RabbitMQ is not reachable.
func requireBroker(t *testing.T) amqp.Config {
	t.Helper()
	cfg, err := amqp.ParseURL(brokerURL())
	require.NoError(t, err)
	uri, err := amqp091.ParseURI(cfg.URL)
	require.NoError(t, err)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)), 5*time.Second)
	require.NoError(t, err, "RabbitMQ is required at %s (set IDEMPO_AMQP_URL to use another)", uri.Host)
	require.NoError(t, conn.Close())
	return cfg
}

func uniqueQueue(prefix string) string {
	return "idempo_test_" + prefix + "_" + watermill.NewShortUUID()
}

// deleteQueue removes a test queue at cleanup.
func deleteQueue(t *testing.T, url, queue string) {
	t.Helper()
	t.Cleanup(func() { deleteQueueNow(url, queue) })
}

func deleteQueueNow(url, queue string) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	_, _ = ch.QueueDelete(queue, false, false, false)
}

func newPublisher(t *testing.T, cfg amqp.Config) *amqp.Publisher {
	t.Helper()
	p, err := amqp.NewPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func newSubscriber(t *testing.T, cfg amqp.Config) *amqp.Subscriber {
	t.Helper()
	s, err := amqp.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func subscribe(t *testing.T, s message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	require.NoError(t, err)
	return ch
}

// receive reads n messages from ch, acking each, or fails after timeout.
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
