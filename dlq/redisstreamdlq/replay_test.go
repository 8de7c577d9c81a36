package redisstreamdlq_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/internal/dlqtest"
	"github.com/idempo/idempo/dlq/redisstreamdlq"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// TestReplayOnRedisStreamsProcessesOnce runs the whole flow on a real
// server: poison events land in the DLQ stream; after the fix, a replay
// processes each exactly once, however often it is repeated or
// redelivered; reading the DLQ consumes nothing.
func TestReplayOnRedisStreamsProcessesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayProcessesOnce(w.replayer, func(t *testing.T, _ int, e dlqops.Entry) {
		id, ok := redisstreamdlq.StreamID(e.Position)
		require.True(t, ok)
		require.Equal(t, id, e.Message.Metadata.Get(redisstream.EntryIDKey))
	})
	groups, err := w.client.XInfoGroups(context.Background(), w.DLQTopic).Result()
	require.NoError(t, err)
	require.Empty(t, groups, "reading the DLQ must not create a consumer group")
}

// Entries written by other tools, or with damaged idempo metadata, are
// listed with their problems; a missing stream is a clear error.
func TestForeignAndMalformedEntries(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.Ops(nil)
	ctx := context.Background()

	err := ops.List(ctx, w.DLQTopic, dlqops.Filter{}, func(dlqops.Entry) error { return nil })
	require.ErrorIs(t, err, redisstreamdlq.ErrNoStream)
	require.ErrorContains(t, err, w.DLQTopic)

	require.NoError(t, w.client.XAdd(ctx, &redis.XAddArgs{Stream: w.DLQTopic, Values: map[string]any{"payload": "from another tool", "count": "7"}}).Err())
	bad := message.NewMessage("bad-uuid", []byte("x"))
	bad.Metadata.Set(dlqmeta.KeyEntryID, "entry-bad")
	bad.Metadata.Set(dlqmeta.KeyAttempts, "abc")
	bad.Metadata.Set(dlqmeta.KeyOriginalTopic, w.Topic)
	require.NoError(t, w.dlqPub.Publish(w.DLQTopic, bad))

	got := dlqtest.List(t, ops, w.DLQTopic, dlqops.Filter{})
	require.Len(t, got, 2)
	require.Equal(t, "from another tool", string(got[0].Message.Payload))
	require.NotEmpty(t, got[0].Problems)
	require.Equal(t, "7", got[0].Message.Metadata.Get("count"))
	require.Equal(t, "entry-bad", got[1].ID)
	require.Len(t, got[1].Problems, 1)
	require.Contains(t, got[1].Problems[0], dlqmeta.KeyAttempts)
	n, err := w.Source.(*redisstreamdlq.Source).Count(ctx, w.DLQTopic)
	require.NoError(t, err)
	require.Equal(t, 2, n)
}

// TestReplayCrashLosesNothing kills a replay with SIGKILL right after its
// first republish: no dead letter is lost, and a second replay plus
// consumption gives each event's effect at most once.
func TestReplayCrashLosesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayCrashLosesNothing(w.replayer, "IDEMPO_PREFIX="+w.prefix)
}

// Entries of a producer that sets no UUID and no id field are
// dead-lettered as separate entries, and a replay processes each once.
func TestIDLessDeadLettersReplayOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.IDLessReplayProcessesOnce(20, w.replayer, func(payloads []string) {
		for _, p := range payloads {
			require.NoError(t, w.client.XAdd(context.Background(), &redis.XAddArgs{Stream: w.Topic, Values: map[string]any{"payload": p}}).Err())
		}
	})
}

// An entry with an id field and no UUID, dead-lettered and replayed, keeps
// its event ID.
func TestReplayKeepsIDField(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ReplayKeepsEventID(w.replayer, dedup.FirstOf(redisstream.MessageID(), dedup.UUID()), func(id, payload string) {
		require.NoError(t, w.client.XAdd(context.Background(), &redis.XAddArgs{Stream: w.Topic, Values: map[string]any{"id": id, "payload": payload}}).Err())
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

// ReadAfter reads from the entry after the position given.
func TestReadAfter(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	for i := range 4 {
		require.NoError(t, w.dlqPub.Publish(w.DLQTopic, message.NewMessage("u"+strconv.Itoa(i), nil)))
	}
	src := w.Source.(*redisstreamdlq.Source)
	positions := func(after map[string]int64) []string {
		t.Helper()
		var out []string
		require.NoError(t, src.ReadAfter(ctx, w.DLQTopic, after, func(e dlqops.Entry) error { out = append(out, e.Position); return nil }))
		return out
	}
	all := positions(nil)
	require.Len(t, all, 4)
	second, err := strconv.ParseInt(all[1], 10, 64)
	require.NoError(t, err)
	require.Equal(t, all[2:], positions(map[string]int64{"": second}))
	last, err := strconv.ParseInt(all[3], 10, 64)
	require.NoError(t, err)
	require.Empty(t, positions(map[string]int64{"": last}), "nothing after the last")
}

func TestPosition(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"0-0", "0-1", "1700000000000-0", "1700000000000-1048575", "8796093022207-5"} {
		p, ok := redisstreamdlq.Position(id)
		require.True(t, ok, id)
		back, ok := redisstreamdlq.StreamID(p)
		require.True(t, ok)
		require.Equal(t, id, back)
	}
	a, _ := redisstreamdlq.Position("1700000000000-1048575")
	b, _ := redisstreamdlq.Position("1700000000001-0")
	ai, _ := strconv.ParseInt(a, 10, 64)
	bi, _ := strconv.ParseInt(b, 10, 64)
	require.Less(t, ai, bi, "positions grow with the stream")
	for _, bad := range []string{"", "1", "1-1048576", "x-1", "8796093022208-0"} {
		_, ok := redisstreamdlq.Position(bad)
		require.False(t, ok, bad)
	}
}
