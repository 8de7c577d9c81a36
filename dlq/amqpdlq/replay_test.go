package amqpdlq_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/amqpdlq"
)

// TestReplayOnRabbitMQProcessesOnce runs the whole flow on a real broker:
// poison events land in the DLQ stream; after the fix, a replay processes
// each exactly once, however often it is repeated or redelivered.
func TestReplayOnRabbitMQProcessesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.run()
	poison := []string{"ev-0", "ev-2", "ev-4"}
	for i, id := range []string{"ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5"} {
		p := "ok"
		if i%2 == 0 {
			p = "poison"
		}
		w.publish(id, p)
	}
	w.publish("ev-1", "ok") // a publisher duplicate
	ops := w.ops(w.replayer)
	ctx := context.Background()

	entries := waitEntries(t, ops, w.dlqTopic, 3)
	waitEffects(t, w, "ev-1", "ev-3", "ev-5")
	for i, e := range entries {
		require.Equal(t, poison[i], e.EventID)
		require.Equal(t, poison[i], e.OriginalUUID)
		require.Equal(t, dlq.ReasonPermanent, e.Reason)
		require.Contains(t, e.Error, "bug: cannot bill")
		require.Equal(t, "permanent", e.ErrorClass)
		require.Equal(t, w.topic, e.OriginalTopic)
		require.Equal(t, "billing", e.Handler)
		require.Empty(t, e.Problems)
		require.Empty(t, e.Resolution)
		require.Equal(t, "poison", string(e.Message.Payload))
		require.NotContains(t, e.Message.Metadata, amqpdlq.StreamOffsetHeader)
	}
	again := list(t, ops, w.dlqTopic, dlq.Filter{})
	require.Equal(t, positions(entries), positions(again), "listing consumes and reorders nothing")

	shown, err := ops.Show(ctx, w.dlqTopic, entries[1].ID)
	require.NoError(t, err)
	require.Equal(t, "ev-2", shown.EventID)
	_, err = ops.Show(ctx, w.dlqTopic, "no-such-id")
	require.ErrorIs(t, err, dlq.ErrNotFound)

	dry, err := ops.Replay(ctx, w.dlqTopic, dlq.Filter{}, dlq.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, 3, dry.Skipped)
	require.Len(t, list(t, ops, w.dlqTopic, dlq.Filter{}), 3, "a dry run resolves nothing")

	w.broken.Store(false)
	res, err := ops.Replay(ctx, w.dlqTopic, dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlq.ReplayResult{Replayed: 3}, res)
	waitEffects(t, w, poison...)

	// A second replay finds nothing to do; a replay delivered twice (a
	// duplicate of the republish) is deduplicated.
	res, err = ops.Replay(ctx, w.dlqTopic, dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Replayed)
	for _, e := range entries {
		require.NoError(t, w.pub.Publish(w.topic, replayMessage(e)))
	}
	w.publish("ev-6", "ok") // a marker: once it is processed, the duplicates before it were too
	waitEffects(t, w, "ev-6")
	for _, id := range []string{"ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5"} {
		require.Equal(t, 1, w.effect(id), "event %s processed exactly once", id)
	}

	require.Empty(t, list(t, ops, w.dlqTopic, dlq.Filter{}), "nothing unresolved is left")
	all := list(t, ops, w.dlqTopic, dlq.Filter{All: true})
	require.Len(t, all, 3)
	for _, e := range all {
		require.Equal(t, dlq.Replayed, e.Resolution)
	}
}

func positions(es []dlq.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID + "@" + e.Position
	}
	return out
}

// Messages written by other tools, or with damaged idempo metadata, are
// listed with their problems; a missing queue and a classic queue are clear
// errors; an empty stream lists nothing without waiting long.
func TestForeignAndMalformedEntries(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.ops(nil)
	ctx := context.Background()

	err := ops.List(ctx, w.dlqTopic, dlq.Filter{}, func(dlq.Entry) error { return nil })
	require.ErrorIs(t, err, amqpdlq.ErrNoQueue)
	require.ErrorContains(t, err, w.dlqTopic)
	err = ops.List(ctx, w.topic, dlq.Filter{}, func(dlq.Entry) error { return nil })
	require.ErrorIs(t, err, amqpdlq.ErrNotStream, "a classic queue is refused, not drained")

	dlqPub, err := amqpdlq.NewDLQPublisher(w.cfg, nil)
	require.NoError(t, err)
	defer dlqPub.Close()
	require.NoError(t, dlqPub.DeclareQueue(w.dlqTopic))
	require.Empty(t, list(t, ops, w.dlqTopic, dlq.Filter{}), "an empty stream has no entries")

	conn, err := amqp091.Dial(brokerURL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	require.NoError(t, ch.PublishWithContext(ctx, "", w.dlqTopic, false, false, amqp091.Publishing{
		Body: []byte("from another tool"), Headers: amqp091.Table{"count": int32(7), "nested": amqp091.Table{"a": "b"}},
	}))
	require.True(t, (<-confirms).Ack)

	bad := message.NewMessage("bad-uuid", []byte("x"))
	bad.Metadata.Set(dlq.KeyEntryID, "entry-bad")
	bad.Metadata.Set(dlq.KeyAttempts, "abc")
	bad.Metadata.Set(dlq.KeyOriginalTopic, w.topic)
	require.NoError(t, dlqPub.Publish(w.dlqTopic, bad))

	var got []dlq.Entry
	require.Eventually(t, func() bool { got = list(t, ops, w.dlqTopic, dlq.Filter{}); return len(got) == 2 }, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, "0", got[0].Position)
	require.Equal(t, "from another tool", string(got[0].Message.Payload))
	require.NotEmpty(t, got[0].Problems)
	require.Contains(t, got[0].Problems[0], "not written by idempo")
	require.Equal(t, "7", got[0].Message.Metadata.Get("count"))
	require.Equal(t, "entry-bad", got[1].ID)
	require.Len(t, got[1].Problems, 1)
	require.Contains(t, got[1].Problems[0], dlq.KeyAttempts)
}

// TestReplayCrashLosesNothing kills a replay with SIGKILL right after its
// first republish: no dead letter is lost, and a second replay plus
// consumption gives each event's effect at most once.
func TestReplayCrashLosesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.run()
	poison := []string{"c-0", "c-1", "c-2"}
	for _, id := range poison {
		w.publish(id, "poison")
	}
	ops := w.ops(w.replayer)
	entries := waitEntries(t, ops, w.dlqTopic, 3)
	w.broken.Store(false)

	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1", "IDEMPO_PREFIX="+w.prefix, "IDEMPO_DLQ_TOPIC="+w.dlqTopic)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "republished 1", strings.TrimSpace(line))
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	// Nothing lost: every entry is still in the DLQ and still listed; the
	// one caught mid-way shows as in progress until the replay's claim
	// runs out, the two never republished are unresolved.
	all := list(t, ops, w.dlqTopic, dlq.Filter{All: true})
	require.Equal(t, positions(entries), positions(all))
	unresolved := list(t, ops, w.dlqTopic, dlq.Filter{})
	require.Len(t, unresolved, 3, "an entry held by a crashed replay is not resolved")
	require.Equal(t, dlq.InProgress, all[0].Resolution)
	require.Empty(t, all[1].Resolution)

	res, err := ops.Replay(context.Background(), w.dlqTopic, dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 2, res.Replayed)
	waitEffects(t, w, poison...)
	// The crashed replay's entry is replayed again once its claim runs out;
	// simulate that republish now: dedup absorbs it.
	require.NoError(t, w.pub.Publish(w.topic, replayMessage(entries[0])))
	w.publish("c-marker", "ok")
	waitEffects(t, w, "c-marker")
	for _, id := range poison {
		require.Equal(t, 1, w.effect(id), "event %s at most once", id)
	}
}
