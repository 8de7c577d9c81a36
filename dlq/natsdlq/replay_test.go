package natsdlq_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/natsdlq"
)

// The whole flow on a real server: poison events land in the DLQ stream;
// after the fix, a replay processes each exactly once, however often it is
// repeated or redelivered. Positions are stream sequences.
func TestReplayOnNATSProcessesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayProcessesOnce(w.replayer, func(t *testing.T, i int, e dlqops.Entry) {
		_, err := strconv.ParseUint(e.Position, 10, 64)
		require.NoError(t, err, "the position is a stream sequence")
		require.NotContains(t, e.Message.Metadata, nats.NumDeliveredKey)
	})
}

// A foreign producer's Nats-Msg-Id survives dead-lettering and replay: the
// replay is processed under the same event ID, once.
func TestReplayKeepsNatsMsgID(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	nc, err := natsgo.Connect(serverURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	w.ReplayKeepsEventID(w.replayer, nats.MessageID(), func(id, payload string) {
		_, err := js.PublishMsg(context.Background(), &natsgo.Msg{Subject: w.Topic, Data: []byte(payload), Header: natsgo.Header{"Nats-Msg-Id": {id}}})
		require.NoError(t, err)
	})
}

// Entries parked past the replay cap form a DLQ of their own.
func TestParkedEntriesAreADLQ(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ParkedEntriesAreADLQ(w.replayer)
}

// A listing beside a running replay writes nothing and the replay skips
// nothing.
func TestListBesideReplay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ListBesideReplay(w.replayer)
}

// Reading consumes nothing; ReadAfter reads from the sequence after the one
// given; Count counts; a topic without a stream is a clear error.
func TestReadAfterAndCount(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	err := w.source.Read(ctx, w.DLQTopic, func(dlqops.Entry) error { return nil })
	require.ErrorIs(t, err, natsdlq.ErrNoStream)
	require.ErrorContains(t, err, w.DLQTopic)
	for i := range 4 {
		require.NoError(t, w.dlqPub.Publish(w.DLQTopic, message.NewMessage("u"+strconv.Itoa(i), nil)))
	}
	for range 2 { // reading twice reads the same: nothing was consumed
		var ids []string
		require.NoError(t, w.source.Read(ctx, w.DLQTopic, func(e dlqops.Entry) error { ids = append(ids, e.ID+"@"+e.Position); return nil }))
		require.Equal(t, []string{"u0@1", "u1@2", "u2@3", "u3@4"}, ids)
	}
	var after []string
	require.NoError(t, w.source.ReadAfter(ctx, w.DLQTopic, map[string]int64{"": 2}, func(e dlqops.Entry) error {
		after = append(after, e.ID)
		return nil
	}))
	require.Equal(t, []string{"u2", "u3"}, after)
	n, err := w.source.Count(ctx, w.DLQTopic)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.Len(t, dlqtest.List(t, w.Ops(nil), w.DLQTopic, dlqops.Filter{All: true}), 4)
}

// TestReplayCrashLosesNothing kills a replay with SIGKILL right after its
// first republish: no dead letter is lost, and a second replay plus
// consumption gives each event's effect at most once.
func TestReplayCrashLosesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayCrashLosesNothing(w.replayer, "IDEMPO_PREFIX="+w.prefix)
}

// Messages of a producer that sets no UUID header and no Nats-Msg-Id are
// dead-lettered as separate entries, and a replay processes each once.
func TestIDLessDeadLettersReplayOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	nc, err := natsgo.Connect(serverURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	w.IDLessReplayProcessesOnce(20, w.replayer, func(payloads []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, p := range payloads {
			_, err := js.Publish(ctx, w.Topic, []byte(p))
			require.NoError(t, err)
		}
	})
}
