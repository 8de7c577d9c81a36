package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dlq/natsdlq"
)

// TestConsoleOnNATS serves an unauthenticated console (loopback) on a NATS
// JetStream DLQ stream, and replays an entry through it as --operator; the
// console reads the DLQ by sequence and consumes nothing.
func TestConsoleOnNATS(t *testing.T) {
	orig := "idempo_clitest.console." + watermill.NewShortUUID()
	topic := orig + ".dlq"
	nc, err := natsgo.Connect(natsURL)
	require.NoError(t, err, "NATS is required at %s", natsURL)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	streamOf := func(tp string) string {
		name, err := nats.StreamName(tp)
		require.NoError(t, err)
		return name
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, tp := range []string{orig, orig + ".retry", topic, topic + ".parked"} {
			if name, err := nats.StreamName(tp); err == nil {
				_ = js.DeleteStream(ctx, name)
			}
		}
		nc.Close()
	})
	pub, err := natsdlq.NewDLQPublisher(nats.Config{URL: natsURL}, nil)
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, pub.EnsureStream(context.Background(), orig+".retry"))
	id := deadLetter(t, pub, orig, "billing", "ev-n1", `{"n":1}`, permanentFailure())
	deadLetter(t, pub, orig, "billing", "ev-n2", `{"n":2}`, permanentFailure())
	s := serveConsole(t, "--broker", natsURL, "--store", "sqlite://"+filepath.Join(t.TempDir(), "r.db"),
		"--topic", topic, "--unauthenticated", "--operator", "oncall")
	replayThroughConsole(s, topic, id, "ev-n1", orig+".retry", "oncall")
	require.Equal(t, 0, s.stop(), s.stderr.String())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	count := func(tp string) uint64 {
		st, err := js.Stream(ctx, streamOf(tp))
		require.NoError(t, err)
		info, err := st.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	require.EqualValues(t, 1, count(orig+".retry"), "the replay is in the destination stream")
	require.EqualValues(t, 2, count(topic), "the console consumed nothing from the DLQ")
}
