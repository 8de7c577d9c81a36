package dlqops_test

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	dedupmem "github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

func newOps(t *testing.T, src dlqops.Source, st resolution.Store, pub message.Publisher) *dlqops.Ops {
	t.Helper()
	ops, err := dlqops.New(dlqops.Config{Source: src, Resolutions: st, Publisher: pub, Operator: "tester"})
	require.NoError(t, err)
	return ops
}

func list(t *testing.T, ops *dlqops.Ops, topic string, f dlqops.Filter) []dlqops.Entry {
	t.Helper()
	var out []dlqops.Entry
	require.NoError(t, ops.List(context.Background(), topic, f, func(e dlqops.Entry) error { out = append(out, e); return nil }))
	return out
}

// copyOf publishes a dead-letter copy with the given entry ID and metadata.
func copyOf(t *testing.T, bus *sliceDLQ, topic, id string, md map[string]string) {
	t.Helper()
	m := message.NewMessage("u-"+id, []byte("payload of "+id))
	m.Metadata.Set(dlqmeta.KeyEntryID, id)
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	require.NoError(t, bus.Publish(topic, m))
}

// TestReplayEndToEndProcessesOnce: poison events land in the DLQ; after the
// fix, a replay processes each exactly once, even when a replay is
// repeated, and list then shows nothing unresolved.
func TestReplayEndToEndProcessesOnce(t *testing.T) {
	bus := newSliceDLQ()
	store := dedupmem.New(nil)
	stack, err := middleware.New(middleware.Config{
		Store: store, DLQ: dlq.Config{Publisher: bus}, Scope: "billing",
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2}, Logger: quiet,
	})
	require.NoError(t, err)
	defer stack.Close()
	broken := true
	effects := map[string]int{}
	h := stack.Middleware(func(m *message.Message) ([]*message.Message, error) {
		if broken && string(m.Payload) == "poison" {
			return nil, errors.New("bug")
		}
		effects[m.UUID]++
		return nil, nil
	})
	deliver := func(m *message.Message) {
		m.SetContext(context.Background())
		_, err := h(m)
		require.NoError(t, err)
	}
	for i := range 6 {
		p := "ok"
		if i%2 == 0 {
			p = "poison"
		}
		deliver(message.NewMessage("ev-"+strconv.Itoa(i), []byte(p)))
	}
	ops := newOps(t, bus, memstore.New(nil), bus)
	ctx := context.Background()
	listed := list(t, ops, "idempo.dlq", dlqops.Filter{})
	require.Len(t, listed, 3)
	require.Equal(t, dlq.ReasonRetriesExhausted, listed[0].Reason)
	require.Equal(t, "bug", listed[0].Error)
	require.Empty(t, listed[0].Problems)

	shown, err := ops.Show(ctx, "idempo.dlq", listed[1].ID)
	require.NoError(t, err)
	require.Equal(t, "poison", string(shown.Message.Payload))
	_, err = ops.Show(ctx, "idempo.dlq", "nope")
	require.ErrorIs(t, err, dlqops.ErrNotFound)

	dry, err := ops.Replay(ctx, "idempo.dlq", dlqops.Filter{}, dlqops.ReplayOptions{DryRun: true, To: "billing-in"})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{DryRun: true, Replayed: 3, Snapshot: dry.Snapshot}, dry, "a dry run returns the real counts")
	require.Empty(t, bus.take("billing-in"), "a dry run publishes nothing")

	broken = false
	res, err := ops.Replay(ctx, "idempo.dlq", dlqops.Filter{}, dlqops.ReplayOptions{To: "billing-in"})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 3}, res)
	replays := bus.take("billing-in")
	require.Len(t, replays, 3)
	for _, m := range append(replays, replays...) { // each replay delivered twice
		deliver(m.Copy())
	}
	for i := 0; i < 6; i += 2 {
		require.Equal(t, 1, effects["ev-"+strconv.Itoa(i)], "replayed event processed exactly once")
	}
	require.Empty(t, list(t, ops, "idempo.dlq", dlqops.Filter{}), "nothing unresolved is left")
	all := list(t, ops, "idempo.dlq", dlqops.Filter{All: true})
	require.Len(t, all, 3)
	for _, e := range all {
		require.Equal(t, "replayed", e.Resolution)
		require.Equal(t, "tester", e.ResolvedBy)
		require.WithinDuration(t, time.Now(), e.ResolvedAt, time.Minute)
	}
	again, err := ops.Replay(ctx, "idempo.dlq", dlqops.Filter{}, dlqops.ReplayOptions{To: "billing-in"})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{}, again, "a resolved entry is not replayed twice")
}

func TestReplayFailureLeavesEntryUnresolved(t *testing.T) {
	bus := newSliceDLQ()
	m := message.NewMessage("entry-1", []byte("x"))
	m.Metadata.Set(dlqmeta.KeyOriginalTopic, "orders")
	require.NoError(t, bus.Publish("orders.dlq", m))
	ops := newOps(t, bus, memstore.New(nil), bus)
	bus.fail = true
	_, err := ops.Replay(context.Background(), "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
	require.ErrorIs(t, err, dlqops.ErrEntriesFailed)
	bus.fail = false
	left := list(t, ops, "orders.dlq", dlqops.Filter{})
	require.Len(t, left, 1, "not resolved without a confirmed republish")
	require.Empty(t, left[0].Resolution, "a failed republish gives the entry back at once")
	require.NotEmpty(t, left[0].Problems, "a copy written by another tool is listed with its problems")
}

func TestReplayCapParks(t *testing.T) {
	bus := newSliceDLQ()
	copyOf(t, bus, "orders.dlq", "e1", map[string]string{dlqmeta.KeyOriginalTopic: "orders", dlqmeta.KeyReplays: "3"})
	ops := newOps(t, bus, memstore.New(nil), bus)
	res, err := ops.Replay(context.Background(), "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Parked: 1}, res)
	require.Len(t, bus.take(dlqops.ParkingTopic("orders.dlq")), 1)
	require.Empty(t, bus.take("orders"))
	e, err := ops.Show(context.Background(), "orders.dlq", "e1")
	require.NoError(t, err)
	require.Equal(t, "parked", e.Resolution)
}

func TestMalformedMetadataIsListed(t *testing.T) {
	m := message.NewMessage("u", nil)
	m.Metadata.Set(dlqmeta.KeyEntryID, "e")
	m.Metadata.Set(dlqmeta.KeyAttempts, "many")
	m.Metadata.Set(dlqmeta.KeyDeadLetteredAt, "yesterday")
	e := dlqops.ParseEntry("t", "0", m)
	require.Len(t, e.Problems, 2)
	require.Equal(t, "e", e.ID)
}

func FuzzParseEntry(f *testing.F) {
	f.Add("e", "3", "2026-01-01T00:00:00Z", "u")
	f.Add("", "x", "yesterday", "")
	f.Fuzz(func(t *testing.T, id, attempts, at, uuid string) {
		m := message.NewMessage(uuid, nil)
		m.Metadata.Set(dlqmeta.KeyEntryID, id)
		m.Metadata.Set(dlqmeta.KeyAttempts, attempts)
		m.Metadata.Set(dlqmeta.KeyDeadLetteredAt, at)
		e := dlqops.ParseEntry("t", "0/1", m)
		require.NotEmpty(t, e.ID, "every entry has an ID")
		require.GreaterOrEqual(t, e.Attempts, 0)
	})
}

func TestPurge(t *testing.T) {
	bus := newSliceDLQ()
	for i, h := range []string{"a", "b", "a"} {
		copyOf(t, bus, "t", "e"+strconv.Itoa(i), map[string]string{dlqmeta.KeyHandler: h})
	}
	ops := newOps(t, bus, memstore.New(nil), nil)
	dry, err := ops.Purge(context.Background(), "t", dlqops.Filter{Handler: "a"}, dlqops.PurgeOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, 2, dry.Purged, "a dry run counts")
	require.Len(t, list(t, ops, "t", dlqops.Filter{}), 3, "and changes nothing")
	res, err := ops.Purge(context.Background(), "t", dlqops.Filter{Handler: "a"}, dlqops.PurgeOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Purged: 2}, res)
	var left []string
	for _, e := range list(t, ops, "t", dlqops.Filter{}) {
		left = append(left, e.ID)
	}
	require.Equal(t, []string{"e1"}, left)
}

// idLessStack is a consumer whose handler records each event it processes;
// messages with neither an event ID nor a UUID are dead-lettered to bus as
// missing_event_id. Its extractor ends with the replay marker, as
// With the default extractor: a replay invents no UUID, and the stack names
// a replayed ID-less event by its replay marker (docs/dlq.md).
func idLessStack(t *testing.T, bus *sliceDLQ) (func(*message.Message), func() map[string]int) {
	t.Helper()
	stack, err := middleware.New(middleware.Config{
		Store: dedupmem.New(nil), DLQ: dlq.Config{Publisher: bus}, Scope: "billing", Logger: quiet,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })
	var mu sync.Mutex
	effects := map[string]int{}
	h := stack.Middleware(func(m *message.Message) ([]*message.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		effects[m.UUID+"/"+m.Metadata.Get(dlqmeta.KeyReplayID)+"="+string(m.Payload)]++
		return nil, nil
	})
	deliver := func(m *message.Message) {
		m.SetContext(context.Background())
		_, err := h(m)
		require.NoError(t, err)
	}
	return deliver, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(effects)
	}
}

// Dead letters of a producer that sets no ID are separate entries: listed
// one by one and each replayed and processed once, whether the copy knows
// its original's Kafka position (the ID derives from it, so a repeated
// dead-lettering of one delivery is one entry) or not (a random ID).
func TestIDLessDeadLettersAreSeparateEntries(t *testing.T) {
	for _, withPosition := range []bool{true, false} {
		t.Run(map[bool]string{true: "position", false: "random"}[withPosition], func(t *testing.T) {
			bus := newSliceDLQ()
			deliver, effects := idLessStack(t, bus)
			msg := func(i int) *message.Message {
				m := message.NewMessage("", []byte("payload-"+strconv.Itoa(i)))
				if withPosition {
					m.Metadata.Set(dlqmeta.KeyPartition, "0")
					m.Metadata.Set(dlqmeta.KeyOffset, strconv.Itoa(i))
				}
				return m
			}
			r, err := dlq.New(dlq.Config{Publisher: bus})
			require.NoError(t, err)
			info := dlq.Info{Scope: "billing", OriginalTopic: "orders", Failure: dlq.Failure{Reason: dlq.ReasonMissingEventID}}
			for i := range 20 {
				if withPosition {
					// As the stack does, with the topic a router gives it.
					require.NoError(t, r.Publish(context.Background(), msg(i), info))
				} else {
					deliver(msg(i))
				}
			}
			if withPosition {
				// The same delivery dead-lettered again is the same entry.
				require.NoError(t, r.Publish(context.Background(), msg(3), info))
			}
			ops := newOps(t, bus, memstore.New(nil), bus)
			ctx := context.Background()
			dlqTopic := map[bool]string{true: "orders.dlq", false: "idempo.dlq"}[withPosition]
			listed := list(t, ops, dlqTopic, dlqops.Filter{})
			require.Len(t, listed, 20)
			ids := map[string]bool{}
			for _, e := range listed {
				require.Equal(t, dlq.ReasonMissingEventID, e.Reason)
				require.Empty(t, e.Problems)
				ids[e.ID] = true
			}
			require.Len(t, ids, 20, "one entry ID per dead letter")
			if withPosition {
				require.Equal(t, dlqmeta.PositionEntryID("billing", "orders", "0", "3", 0), listed[3].ID)
			}

			res, err := ops.Replay(ctx, dlqTopic, dlqops.Filter{}, dlqops.ReplayOptions{To: "billing-in"})
			require.NoError(t, err)
			require.Equal(t, dlqops.Result{Replayed: 20}, res)
			replays := bus.take("billing-in")
			require.Len(t, replays, 20)
			for _, m := range append(replays, replays...) { // each replay delivered twice
				deliver(m.Copy())
			}
			got := effects()
			require.Len(t, got, 20, "20 distinct events processed")
			for k, n := range got {
				require.Equal(t, 1, n, "%s processed once", k)
			}
		})
	}
}

// Copies that share an entry ID but differ in payload (dead letters written
// before entry IDs told ID-less messages apart) are separate entries; a
// copy repeated with the same payload is one.
func TestCollidingCopiesAreSeparateEntries(t *testing.T) {
	bus := newSliceDLQ()
	for i := range 20 {
		m := message.NewMessage("shared", []byte("payload-"+strconv.Itoa(i%10)))
		m.Metadata.Set(dlqmeta.KeyEntryID, "shared")
		m.Metadata.Set(dlqmeta.KeyOriginalTopic, "orders")
		require.NoError(t, bus.Publish("orders.dlq", m)) // payloads 0-9, twice
	}
	ops := newOps(t, bus, memstore.New(nil), bus)
	ctx := context.Background()
	listed := list(t, ops, "orders.dlq", dlqops.Filter{})
	require.Len(t, listed, 10, "the same payload again is the same entry, listed once")
	require.Equal(t, "shared", listed[0].ID)
	require.Empty(t, listed[0].Problems)
	for i := range 10 {
		require.Equal(t, "payload-"+strconv.Itoa(i), string(listed[i].Message.Payload), "each entry listed at its first copy")
		if i > 0 {
			require.Equal(t, dlqmeta.CollisionEntryID("shared", listed[i].Message.Payload), listed[i].ID)
			require.Contains(t, listed[i].Problems[0], "shares entry ID shared")
		}
	}
	shown, err := ops.Show(ctx, "orders.dlq", listed[4].ID)
	require.NoError(t, err)
	require.Equal(t, "payload-4", string(shown.Message.Payload))

	res, err := ops.Replay(ctx, "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 10}, res, "a repeated copy is resolved with its first")
	uuids := map[string]string{}
	for _, m := range bus.take("orders") {
		require.Empty(t, m.UUID, "the originals had no UUID: a replay invents none")
		uuids[m.Metadata.Get(dlqmeta.KeyReplayID)] = string(m.Payload)
	}
	require.Len(t, uuids, 10, "each entry replays as its own event (named by its replay marker)")
	require.Empty(t, list(t, ops, "orders.dlq", dlqops.Filter{}), "nothing unresolved is left")
}

// Replaying one DLQ's entry leaves another DLQ's entry with the same ID
// unresolved: resolutions are keyed by DLQ and entry ID.
func TestResolutionIsPerDLQ(t *testing.T) {
	bus := newSliceDLQ()
	for _, topic := range []string{"a.dlq", "b.dlq"} {
		copyOf(t, bus, topic, "e1", map[string]string{dlqmeta.KeyOriginalTopic: "orders"})
	}
	ops := newOps(t, bus, memstore.New(nil), bus)
	ctx := context.Background()
	res, err := ops.Replay(ctx, "a.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 1}, res)
	b, err := ops.Show(ctx, "b.dlq", "e1")
	require.NoError(t, err)
	require.Empty(t, b.Resolution, "the resolution of a.dlq's e1 does not cover b.dlq's")
	require.Len(t, list(t, ops, "b.dlq", dlqops.Filter{}), 1)
	res, err = ops.Purge(ctx, "b.dlq", dlqops.Filter{}, dlqops.PurgeOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Purged: 1}, res)
	for topic, want := range map[string]string{"a.dlq": "replayed", "b.dlq": "purged"} {
		e, err := ops.Show(ctx, topic, "e1")
		require.NoError(t, err)
		require.Equal(t, want, e.Resolution, topic)
	}
}

// An entry that cannot be replayed is reported and the others are replayed
// all the same; a dry run counts it as failing.
func TestReplayGoesOnPastABadEntry(t *testing.T) {
	bus := newSliceDLQ()
	for i, orig := range []string{"orders", "", "orders"} {
		copyOf(t, bus, "orders.dlq", "e"+strconv.Itoa(i), map[string]string{dlqmeta.KeyOriginalTopic: orig})
	}
	ops := newOps(t, bus, memstore.New(nil), bus)
	ctx := context.Background()
	for _, dry := range []bool{true, false} {
		var actions []string
		res, err := ops.Replay(ctx, "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{DryRun: dry, Progress: func(_ int, e dlqops.Entry, a dlqops.Action) {
			actions = append(actions, e.ID+" "+string(a))
		}})
		require.ErrorIs(t, err, dlqops.ErrEntriesFailed, "dry run %v", dry)
		require.ErrorIs(t, err, dlqops.ErrNoDestination)
		require.ErrorContains(t, err, "1 of 3 entries")
		require.Equal(t, 1, res.Failed)
		require.Equal(t, 2, res.Replayed, "dry run %v", dry)
		require.Len(t, res.Failures, 1)
		require.Equal(t, "e1", res.Failures[0].ID)
		require.Equal(t, "1", res.Failures[0].Position)
		require.ErrorIs(t, res.Failures[0], dlqops.ErrNoDestination)
		require.Equal(t, []string{"e0 replay", "e1 failed", "e2 replay"}, actions)
		if dry {
			require.Empty(t, bus.take("orders"))
		} else {
			require.Len(t, bus.take("orders"), 2)
		}
	}
	left := list(t, ops, "orders.dlq", dlqops.Filter{})
	require.Len(t, left, 1, "the bad entry stays unresolved")
	require.Equal(t, "e1", left[0].ID)
	res, err := ops.Replay(ctx, "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{To: "elsewhere"})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 1}, res)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := dlqops.New(dlqops.Config{})
	require.ErrorIs(t, err, dlqops.ErrInvalidConfig)
	require.ErrorContains(t, err, "Source is required")
	require.ErrorContains(t, dlqops.Config{Source: newSliceDLQ()}.Validate(), "Resolutions is required")
	require.ErrorContains(t, dlqops.Config{Source: newSliceDLQ(), Resolutions: memstore.New(nil), MaxReplays: -1}.Validate(), "MaxReplays")
	require.ErrorContains(t, dlqops.Config{Source: newSliceDLQ(), Resolutions: memstore.New(nil), Lease: -1}.Validate(), "Lease")
	require.NoError(t, dlqops.Config{Source: newSliceDLQ(), Resolutions: memstore.New(nil)}.Validate())
	ops, err := dlqops.New(dlqops.Config{Source: newSliceDLQ(), Resolutions: memstore.New(nil)})
	require.NoError(t, err)
	_, err = ops.Replay(context.Background(), "t", dlqops.Filter{}, dlqops.ReplayOptions{})
	require.ErrorContains(t, err, "Publisher is required")
}
