package amqpdlq_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq/amqpdlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// TestReplayOnRabbitMQProcessesOnce runs the whole flow on a real broker:
// poison events land in the DLQ stream; after the fix, a replay processes
// each exactly once, however often it is repeated or redelivered.
func TestReplayOnRabbitMQProcessesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayProcessesOnce(w.replayer, func(t *testing.T, _ int, e dlqops.Entry) {
		require.NotContains(t, e.Message.Metadata, amqpdlq.StreamOffsetHeader)
	})
}

// Messages written by other tools, or with damaged idempo metadata, are
// listed with their problems; a missing queue and a classic queue are clear
// errors; an empty stream lists nothing without waiting long.
func TestForeignAndMalformedEntries(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.Ops(nil)
	ctx := context.Background()

	err := ops.List(ctx, w.DLQTopic, dlqops.Filter{}, func(dlqops.Entry) error { return nil })
	require.ErrorIs(t, err, amqpdlq.ErrNoQueue)
	require.ErrorContains(t, err, w.DLQTopic)
	err = ops.List(ctx, w.Topic, dlqops.Filter{}, func(dlqops.Entry) error { return nil })
	require.ErrorIs(t, err, amqpdlq.ErrNotStream, "a classic queue is refused, not drained")

	require.NoError(t, w.dlqPub.DeclareQueue(w.DLQTopic))
	require.Empty(t, dlqtest.List(t, ops, w.DLQTopic, dlqops.Filter{}), "an empty stream has no entries")

	conn, err := amqp091.Dial(brokerURL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	require.NoError(t, ch.PublishWithContext(ctx, "", w.DLQTopic, false, false, amqp091.Publishing{
		Body: []byte("from another tool"), Headers: amqp091.Table{"count": int32(7), "nested": amqp091.Table{"a": "b"}},
	}))
	require.True(t, (<-confirms).Ack)

	bad := message.NewMessage("bad-uuid", []byte("x"))
	bad.Metadata.Set(dlqmeta.KeyEntryID, "entry-bad")
	bad.Metadata.Set(dlqmeta.KeyAttempts, "abc")
	bad.Metadata.Set(dlqmeta.KeyOriginalTopic, w.Topic)
	require.NoError(t, w.dlqPub.Publish(w.DLQTopic, bad))

	var got []dlqops.Entry
	require.Eventually(t, func() bool { got = dlqtest.List(t, ops, w.DLQTopic, dlqops.Filter{}); return len(got) == 2 }, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, "0", got[0].Position)
	require.Equal(t, "from another tool", string(got[0].Message.Payload))
	require.NotEmpty(t, got[0].Problems)
	require.Contains(t, got[0].Problems[0], "not written by idempo")
	require.Equal(t, "7", got[0].Message.Metadata.Get("count"))
	require.Equal(t, "entry-bad", got[1].ID)
	require.Len(t, got[1].Problems, 1)
	require.Contains(t, got[1].Problems[0], dlqmeta.KeyAttempts)
}

// TestReplayCrashLosesNothing kills a replay with SIGKILL right after its
// first republish: no dead letter is lost, and a second replay plus
// consumption gives each event's effect at most once.
func TestReplayCrashLosesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayCrashLosesNothing(w.replayer, "IDEMPO_PREFIX="+w.prefix)
}

// Messages of a producer that sets neither a message-id nor a UUID header
// (a bare amqp091 publish) are dead-lettered as separate entries, and a
// replay processes each once.
func TestIDLessDeadLettersReplayOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.IDLessReplayProcessesOnce(20, w.replayer, func(payloads []string) {
		conn, err := amqp091.Dial(brokerURL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		require.NoError(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, len(payloads)))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, p := range payloads {
			require.NoError(t, ch.PublishWithContext(ctx, "", w.Topic, false, false, amqp091.Publishing{Body: []byte(p)}))
		}
		for range payloads {
			select {
			case c := <-confirms:
				require.True(t, c.Ack, "the broker confirmed the publish")
			case <-ctx.Done():
				t.Fatal("no publisher confirm within 30s")
			}
		}
	})
}

// A message with an "id" header and no UUID or message-id, dead-lettered
// and replayed, keeps its event ID: the replay carries no UUID, and no
// message-id either (not the copy's own), for an extractor that reads it.
func TestReplayKeepsMetadataEventID(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayKeepsEventID(w.replayer, dedup.FirstOf(dedup.UUID(), amqp.MessageID(), dedup.Metadata("id")), func(id, payload string) {
		conn, err := amqp091.Dial(brokerURL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		require.NoError(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, ch.PublishWithContext(ctx, "", w.Topic, false, false, amqp091.Publishing{
			Body: []byte(payload), Headers: amqp091.Table{"id": id},
		}))
		select {
		case c := <-confirms:
			require.True(t, c.Ack, "the broker confirmed the publish")
		case <-ctx.Done():
			t.Fatal("no publisher confirm within 30s")
		}
	})
}

// An event parked past the replay cap lists, shows and replays from the
// parking stream like any dead letter.
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

// ReadAfter reads from the stream offset after the one given.
func TestReadAfter(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	require.NoError(t, w.dlqPub.DeclareQueue(w.DLQTopic))
	for i := range 4 {
		require.NoError(t, w.dlqPub.Publish(w.DLQTopic, message.NewMessage("u"+strconv.Itoa(i), nil)))
	}
	src := w.Source.(*amqpdlq.Source)
	positions := func(after map[string]int64) []string {
		t.Helper()
		var out []string
		require.Eventually(t, func() bool {
			out = nil
			require.NoError(t, src.ReadAfter(ctx, w.DLQTopic, after, func(e dlqops.Entry) error { out = append(out, e.Position); return nil }))
			return len(out) > 0
		}, 30*time.Second, 100*time.Millisecond)
		return out
	}
	all := positions(nil)
	require.Len(t, all, 4)
	first, err := strconv.ParseInt(all[0], 10, 64)
	require.NoError(t, err)
	require.Equal(t, all[2:], positions(map[string]int64{"": first + 1}))
	var none []string
	require.NoError(t, src.ReadAfter(ctx, w.DLQTopic, map[string]int64{"": first + 3}, func(e dlqops.Entry) error { none = append(none, e.Position); return nil }))
	require.Empty(t, none, "nothing after the last")
}
