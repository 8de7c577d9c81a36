package nats_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
)

// serverURL is the shared NATS server the tests use: IDEMPO_NATS_URL or
// nats://127.0.0.1:4222.
func serverURL() string {
	if u := os.Getenv("IDEMPO_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// requireServer fails the test (it does not skip) when NATS is not reachable.
func requireServer(t *testing.T) nats.Config {
	t.Helper()
	cfg, err := nats.ParseURL(serverURL())
	require.NoError(t, err)
	u, err := url.Parse(cfg.URL)
	require.NoError(t, err)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "4222")
	}
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	require.NoError(t, err, "NATS JetStream is required at %s (set IDEMPO_NATS_URL to use another)", host)
	require.NoError(t, conn.Close())
	return cfg
}

// uniqueTopic returns a topic of its own for a test, with '.' separators.
func uniqueTopic(prefix string) string {
	return "idempo_test." + prefix + "." + watermill.NewShortUUID()
}

// deleteStreams removes the streams of topics at cleanup.
func deleteStreams(t *testing.T, url string, topics ...string) {
	t.Helper()
	t.Cleanup(func() { deleteStreamsNow(url, topics...) })
}

func deleteStreamsNow(url string, topics ...string) {
	nc, err := natsgo.Connect(url, natsgo.Timeout(5*time.Second))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, topic := range topics {
		if name, err := nats.StreamName(topic); err == nil {
			_ = js.DeleteStream(ctx, name)
		}
	}
}

// jsClient is a bare nats.go JetStream client, closed at cleanup.
func jsClient(t *testing.T, url string) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsgo.Connect(url, natsgo.Timeout(5*time.Second))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func newPublisher(t *testing.T, cfg nats.Config) *nats.Publisher {
	t.Helper()
	p, err := nats.NewPublisher(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func newSubscriber(t *testing.T, cfg nats.Config) *nats.Subscriber {
	t.Helper()
	s, err := nats.NewSubscriber(cfg, nil)
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

// nothingMore fails if ch yields a message within wait.
func nothingMore(t *testing.T, ch <-chan *message.Message, wait time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected delivery %q (metadata %v)", m.UUID, m.Metadata)
	case <-time.After(wait):
	}
}
