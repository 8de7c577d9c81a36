package dlq_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

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
		Store: store, DLQPublisher: bus, Scope: "billing",
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
