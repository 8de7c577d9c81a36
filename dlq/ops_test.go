package dlq_test

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

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// sliceDLQ is a publisher that appends to per-topic logs and a Source that
// reads them: the shape of an append-only DLQ.
type sliceDLQ struct {
	mu   sync.Mutex
	logs map[string][]*message.Message
	fail bool
}

func newSliceDLQ() *sliceDLQ { return &sliceDLQ{logs: map[string][]*message.Message{}} }

func (s *sliceDLQ) Publish(topic string, msgs ...*message.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("broker down")
	}
	s.logs[topic] = append(s.logs[topic], msgs...)
	return nil
}
func (s *sliceDLQ) Close() error { return nil }

func (s *sliceDLQ) Read(ctx context.Context, topic string, fn func(dlq.Entry) error) error {
	s.mu.Lock()
	msgs := append([]*message.Message(nil), s.logs[topic]...)
	s.mu.Unlock()
	for i, m := range msgs {
		if err := fn(dlq.ParseEntry(topic, strconv.Itoa(i), m)); err != nil {
			return err
		}
	}
	return nil
}

func (s *sliceDLQ) take(topic string) []*message.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.logs[topic]
	delete(s.logs, topic)
	return m
}

// TestReplayEndToEndProcessesOnce: poison events land in the DLQ; after the
// fix, a replay processes each exactly once, even when a replay is
// repeated, and list then shows nothing unresolved.
func TestReplayEndToEndProcessesOnce(t *testing.T) {
	bus := newSliceDLQ()
	store := memstore.New(nil)
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
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: store, Publisher: bus})
	require.NoError(t, err)
	ctx := context.Background()
	var listed []dlq.Entry
	require.NoError(t, ops.List(ctx, "idempo.dlq", dlq.Filter{}, func(e dlq.Entry) error { listed = append(listed, e); return nil }))
	require.Len(t, listed, 3)
	require.Equal(t, dlq.ReasonRetriesExhausted, listed[0].Reason)
	require.Equal(t, "bug", listed[0].Error)
	require.Empty(t, listed[0].Problems)

	shown, err := ops.Show(ctx, "idempo.dlq", listed[1].ID)
	require.NoError(t, err)
	require.Equal(t, "poison", string(shown.Message.Payload))
	_, err = ops.Show(ctx, "idempo.dlq", "nope")
	require.ErrorIs(t, err, dlq.ErrNotFound)

	dry, err := ops.Replay(ctx, "idempo.dlq", dlq.Filter{}, dlq.ReplayOptions{DryRun: true, To: "billing-in"})
	require.NoError(t, err)
	require.Equal(t, 3, dry.Skipped)
	require.Empty(t, bus.take(""), "a dry run publishes nothing")

	broken = false
	res, err := ops.Replay(ctx, "idempo.dlq", dlq.Filter{}, dlq.ReplayOptions{To: "billing-in"})
	require.NoError(t, err)
	require.Equal(t, 3, res.Replayed)
	replays := bus.take("billing-in")
	require.Len(t, replays, 3)
	// The consumer sees each replay twice (a duplicated replay): one effect each.
	for _, m := range append(replays, replays...) {
		c := m.Copy()
		deliver(c)
	}
	for i := 0; i < 6; i += 2 {
		require.Equal(t, 1, effects["ev-"+strconv.Itoa(i)], "replayed event processed exactly once")
	}
	require.NoError(t, ops.List(ctx, "idempo.dlq", dlq.Filter{}, func(e dlq.Entry) error {
		t.Fatalf("unresolved entry left: %s", e.ID)
		return nil
	}))
	n := 0
	require.NoError(t, ops.List(ctx, "idempo.dlq", dlq.Filter{All: true}, func(e dlq.Entry) error {
		require.Equal(t, dlq.Replayed, e.Resolution)
		n++
		return nil
	}))
	require.Equal(t, 3, n)
	again, err := ops.Replay(ctx, "idempo.dlq", dlq.Filter{}, dlq.ReplayOptions{To: "billing-in"})
	require.NoError(t, err)
	require.Zero(t, again.Replayed, "a resolved entry is not replayed twice")
}

func TestReplayFailureLeavesEntryUnresolved(t *testing.T) {
	bus := newSliceDLQ()
	m := message.NewMessage("entry-1", []byte("x"))
	m.Metadata.Set(dlq.KeyOriginalTopic, "orders")
	require.NoError(t, bus.Publish("orders.dlq", m))
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: memstore.New(nil), Publisher: bus})
	require.NoError(t, err)
	bus.fail = true
	_, err = ops.Replay(context.Background(), "orders.dlq", dlq.Filter{}, dlq.ReplayOptions{})
	require.Error(t, err)
	bus.fail = false
	var left []dlq.Entry
	require.NoError(t, ops.List(context.Background(), "orders.dlq", dlq.Filter{}, func(e dlq.Entry) error { left = append(left, e); return nil }))
	require.Len(t, left, 1, "not resolved without a confirmed republish")
	require.NotEmpty(t, left[0].Problems, "a copy written by another tool is listed with its problems")
}

func TestReplayCapParks(t *testing.T) {
	bus := newSliceDLQ()
	m := message.NewMessage("u", []byte("x"))
	m.Metadata.Set(dlq.KeyEntryID, "e1")
	m.Metadata.Set(dlq.KeyOriginalTopic, "orders")
	m.Metadata.Set(dlq.KeyReplays, "3")
	require.NoError(t, bus.Publish("orders.dlq", m))
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: memstore.New(nil), Publisher: bus})
	require.NoError(t, err)
	res, err := ops.Replay(context.Background(), "orders.dlq", dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Parked)
	require.Len(t, bus.take("orders.dlq.parked"), 1)
	require.Empty(t, bus.take("orders"))
}

func TestMalformedMetadataIsListed(t *testing.T) {
	m := message.NewMessage("u", nil)
	m.Metadata.Set(dlq.KeyEntryID, "e")
	m.Metadata.Set(dlq.KeyAttempts, "many")
	m.Metadata.Set(dlq.KeyDeadLetteredAt, "yesterday")
	e := dlq.ParseEntry("t", "0", m)
	require.Len(t, e.Problems, 2)
	require.Equal(t, "e", e.ID)
}

func TestPurge(t *testing.T) {
	bus := newSliceDLQ()
	for i := range 3 {
		m := message.NewMessage("u"+strconv.Itoa(i), nil)
		m.Metadata.Set(dlq.KeyEntryID, "e"+strconv.Itoa(i))
		m.Metadata.Set(dlq.KeyHandler, []string{"a", "b", "a"}[i])
		require.NoError(t, bus.Publish("t", m))
	}
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: memstore.New(nil)})
	require.NoError(t, err)
	res, err := ops.Purge(context.Background(), "t", dlq.Filter{Handler: "a"}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 2, res.Purged)
	var left []string
	require.NoError(t, ops.List(context.Background(), "t", dlq.Filter{}, func(e dlq.Entry) error { left = append(left, e.ID); return nil }))
	require.Equal(t, []string{"e1"}, left)
}

// idLessStack is a consumer whose handler records each event it processes;
// messages with neither an event ID nor a UUID are dead-lettered to bus as
// missing_event_id.
func idLessStack(t *testing.T, bus *sliceDLQ) (func(*message.Message), func() map[string]int) {
	t.Helper()
	stack, err := middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: bus}, Scope: "billing", Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })
	var mu sync.Mutex
	effects := map[string]int{}
	h := stack.Middleware(func(m *message.Message) ([]*message.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		effects[m.UUID+"="+string(m.Payload)]++
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
					m.Metadata.Set(dlq.KeyPartition, "0")
					m.Metadata.Set(dlq.KeyOffset, strconv.Itoa(i))
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
			ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: memstore.New(nil), Publisher: bus})
			require.NoError(t, err)
			ctx := context.Background()
			dlqTopic := map[bool]string{true: "orders.dlq", false: "idempo.dlq"}[withPosition]
			var listed []dlq.Entry
			require.NoError(t, ops.List(ctx, dlqTopic, dlq.Filter{}, func(e dlq.Entry) error { listed = append(listed, e); return nil }))
			require.Len(t, listed, 20)
			ids := map[string]bool{}
			for _, e := range listed {
				require.Equal(t, dlq.ReasonMissingEventID, e.Reason)
				require.Empty(t, e.Problems)
				ids[e.ID] = true
			}
			require.Len(t, ids, 20, "one entry ID per dead letter")
			if withPosition {
				require.Equal(t, listed[3].ID, r.Copy(msg(3), info).UUID, "the same delivery dead-lettered again is the same entry")
				require.Equal(t, dlq.PositionEntryID("billing", "orders", "0", "3", 0), listed[3].ID)
			}

			res, err := ops.Replay(ctx, dlqTopic, dlq.Filter{}, dlq.ReplayOptions{To: "billing-in"})
			require.NoError(t, err)
			require.Equal(t, dlq.ReplayResult{Replayed: 20}, res)
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
		m.Metadata.Set(dlq.KeyEntryID, "shared")
		m.Metadata.Set(dlq.KeyOriginalTopic, "orders")
		require.NoError(t, bus.Publish("orders.dlq", m)) // payloads 0-9, twice
	}
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: memstore.New(nil), Publisher: bus})
	require.NoError(t, err)
	ctx := context.Background()
	var listed []dlq.Entry
	require.NoError(t, ops.List(ctx, "orders.dlq", dlq.Filter{}, func(e dlq.Entry) error { listed = append(listed, e); return nil }))
	require.Len(t, listed, 10, "the same payload again is the same entry, listed once")
	require.Equal(t, "shared", listed[0].ID)
	require.Empty(t, listed[0].Problems)
	for i := range 10 {
		require.Equal(t, "payload-"+strconv.Itoa(i), string(listed[i].Message.Payload), "each entry listed at its first copy")
		if i > 0 {
			require.Equal(t, dlq.CollisionEntryID("shared", listed[i].Message.Payload), listed[i].ID)
			require.Contains(t, listed[i].Problems[0], "shares entry ID shared")
		}
	}
	shown, err := ops.Show(ctx, "orders.dlq", listed[4].ID)
	require.NoError(t, err)
	require.Equal(t, "payload-4", string(shown.Message.Payload))

	res, err := ops.Replay(ctx, "orders.dlq", dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlq.ReplayResult{Replayed: 10}, res, "a repeated copy is resolved with its first")
	uuids := map[string]string{}
	for _, m := range bus.take("orders") {
		uuids[m.UUID] = string(m.Payload)
	}
	require.Len(t, uuids, 10, "each entry replays as its own event")
	require.NoError(t, ops.List(ctx, "orders.dlq", dlq.Filter{}, func(e dlq.Entry) error {
		t.Fatalf("unresolved entry left: %s", e.ID)
		return nil
	}))
}

// A resolution recorded for one entry does not cover another entry with
// the same ID (another DLQ, or another payload); a record written before
// resolutions named their entry still covers its ID.
func TestResolutionCoversOnlyItsEntry(t *testing.T) {
	bus := newSliceDLQ()
	for _, topic := range []string{"a.dlq", "b.dlq"} {
		m := message.NewMessage("e1", []byte("from "+topic))
		m.Metadata.Set(dlq.KeyEntryID, "e1")
		m.Metadata.Set(dlq.KeyOriginalTopic, "orders")
		require.NoError(t, bus.Publish(topic, m))
	}
	store := memstore.New(nil)
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: store, Publisher: bus})
	require.NoError(t, err)
	ctx := context.Background()
	res, err := ops.Replay(ctx, "a.dlq", dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	b, err := ops.Show(ctx, "b.dlq", "e1")
	require.NoError(t, err)
	require.Empty(t, b.Resolution, "the resolution of a.dlq's e1 does not cover b.dlq's")
	res, err = ops.Purge(ctx, "b.dlq", dlq.Filter{}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Purged)
	for topic, want := range map[string]string{"a.dlq": dlq.Replayed, "b.dlq": dlq.Purged} {
		e, err := ops.Show(ctx, topic, "e1")
		require.NoError(t, err)
		require.Equal(t, want, e.Resolution, topic)
	}

	// A record holding the kind alone.
	legacy := dedup.Key{Scope: dlq.ResolutionScope, ID: "old"}
	tok := dedup.NewToken()
	_, err = store.Claim(ctx, legacy, dedup.ClaimRequest{Token: tok, Lease: time.Minute, Retention: time.Hour, Fingerprint: []byte(dlq.Replayed)})
	require.NoError(t, err)
	require.NoError(t, store.Complete(ctx, legacy, tok, time.Hour))
	m := message.NewMessage("old", []byte("x"))
	m.Metadata.Set(dlq.KeyEntryID, "old")
	require.NoError(t, bus.Publish("c.dlq", m))
	e, err := ops.Show(ctx, "c.dlq", "old")
	require.NoError(t, err)
	require.Equal(t, dlq.Replayed, e.Resolution)
}

// An entry that cannot be replayed is reported and the others are replayed
// all the same; a dry run reports it too.
func TestReplayGoesOnPastABadEntry(t *testing.T) {
	bus := newSliceDLQ()
	for i, orig := range []string{"orders", "", "orders"} {
		m := message.NewMessage("u"+strconv.Itoa(i), []byte("x"))
		m.Metadata.Set(dlq.KeyEntryID, "e"+strconv.Itoa(i))
		m.Metadata.Set(dlq.KeyOriginalTopic, orig)
		require.NoError(t, bus.Publish("orders.dlq", m))
	}
	ops, err := dlq.NewOps(dlq.OpsConfig{Source: bus, Store: memstore.New(nil), Publisher: bus})
	require.NoError(t, err)
	ctx := context.Background()
	for _, dry := range []bool{true, false} {
		var actions []string
		res, err := ops.Replay(ctx, "orders.dlq", dlq.Filter{}, dlq.ReplayOptions{DryRun: dry, Progress: func(_ int, e dlq.Entry, action string) {
			actions = append(actions, e.ID+" "+action)
		}})
		require.ErrorIs(t, err, dlq.ErrEntriesFailed, "dry run %v", dry)
		require.ErrorIs(t, err, dlq.ErrNoDestination)
		require.ErrorContains(t, err, "1 of 3 entries")
		require.Equal(t, 1, res.Failed)
		require.Len(t, res.Failures, 1)
		require.Equal(t, "e1", res.Failures[0].ID)
		require.Equal(t, "1", res.Failures[0].Position)
		require.ErrorIs(t, res.Failures[0], dlq.ErrNoDestination)
		if dry {
			require.Equal(t, []string{"e0 dry-run replay", "e1 failed", "e2 dry-run replay"}, actions)
			require.Empty(t, bus.take("orders"))
		} else {
			require.Equal(t, []string{"e0 replay", "e1 failed", "e2 replay"}, actions)
			require.Equal(t, 2, res.Replayed)
			require.Len(t, bus.take("orders"), 2)
		}
	}
	var left []string
	require.NoError(t, ops.List(ctx, "orders.dlq", dlq.Filter{}, func(e dlq.Entry) error { left = append(left, e.ID); return nil }))
	require.Equal(t, []string{"e1"}, left, "the bad entry stays unresolved")
	res, err := ops.Replay(ctx, "orders.dlq", dlq.Filter{}, dlq.ReplayOptions{To: "elsewhere"})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
}
