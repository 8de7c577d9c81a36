package dlqtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Handler is the name of the consumer's handler, recorded in its dead
// letters.
const Handler = "billing"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Backend is what differs between the DLQ backends: the broker clients the
// consumer and the DLQ operations use. The backend closes what it gives,
// except the subscribers, which the consumer's router closes.
type Backend struct {
	// Store is the dedup store of the consumer.
	Store dedup.Store
	// Resolutions is the resolution store of the DLQ operations.
	Resolutions resolution.Store
	// Source reads the DLQ topics.
	Source dlqops.Source
	// Publisher publishes to the consumer's topic.
	Publisher message.Publisher
	// DLQPublisher is the publisher the consumer dead-letters through.
	DLQPublisher message.Publisher
	// NewSubscriber returns a subscriber for the consumer's handler.
	NewSubscriber func() (message.Subscriber, error)
}

// World is one consumer under test: a Watermill router with the idempo stack
// on Topic, its dead letters on DLQTopic, and a ledger of the handler's
// effects.
type World struct {
	Backend
	// Topic is the topic the consumer reads.
	Topic string
	// DLQTopic is Topic's dead-letter topic.
	DLQTopic string
	// Broken makes the handler fail permanently for "poison" payloads while
	// it is set. NewWorld sets it.
	Broken atomic.Bool
	// EventID is the stack's extractor, set before Run (default: the
	// stack's, the message UUID). Effects are counted per event ID.
	EventID dedup.Extractor

	t       *testing.T
	mu      sync.Mutex
	effects map[string]int
}

// NewWorld returns a World consuming topic through b. Call Run to start the
// consumer.
func NewWorld(t *testing.T, topic string, b Backend) *World {
	t.Helper()
	w := &World{Backend: b, Topic: topic, DLQTopic: dlq.DefaultTopic(topic, ""), t: t, effects: map[string]int{}}
	w.Broken.Store(true)
	return w
}

// Run starts the consumer; it stops when the test ends.
func (w *World) Run() {
	t := w.t
	t.Helper()
	stack, err := middleware.New(middleware.Config{
		Store: w.Store, DLQ: dlq.Config{Publisher: w.DLQPublisher}, Logger: quiet, EventID: w.EventID,
		Retry: retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2},
	})
	require.NoError(t, err)
	sub, err := w.NewSubscriber()
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddConsumerHandler(Handler, w.Topic, sub, func(m *message.Message) error {
		_, err := stack.Middleware(w.handle)(m)
		return err
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = router.Run(context.Background())
	}()
	<-router.Running()
	t.Cleanup(func() {
		_ = router.Close()
		<-done
		_ = stack.Close()
	})
}

func (w *World) handle(m *message.Message) ([]*message.Message, error) {
	if w.Broken.Load() && string(m.Payload) == "poison" {
		return nil, retry.Permanent(errors.New("bug: cannot bill " + m.UUID))
	}
	id := m.UUID
	if w.EventID != nil {
		id, _ = w.EventID(m) // what the stack extracted: it ran the handler
	}
	if id == "" { // a replayed ID-less event: the stack named it by its marker
		id = m.Metadata.Get(dlqmeta.KeyReplayID)
	}
	w.mu.Lock()
	w.effects[id]++
	w.mu.Unlock()
	return nil, nil
}

// Publish publishes an event with the given ID and payload to Topic.
func (w *World) Publish(id, payload string) {
	w.t.Helper()
	require.NoError(w.t, w.Publisher.Publish(w.Topic, message.NewMessage(id, []byte(payload))))
}

// Effect returns how often the handler processed the event id.
func (w *World) Effect(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.effects[id]
}

// Ops returns the DLQ operations on the backend's source and resolution store,
// replaying through pub.
func (w *World) Ops(pub message.Publisher) *dlqops.Ops {
	w.t.Helper()
	ops, err := dlqops.New(dlqops.Config{Source: w.Source, Resolutions: w.Resolutions, Publisher: pub})
	require.NoError(w.t, err)
	return ops
}

// WaitEffects waits until the handler processed each of ids.
func (w *World) WaitEffects(ids ...string) {
	w.t.Helper()
	require.Eventually(w.t, func() bool {
		for _, id := range ids {
			if w.Effect(id) == 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "effects of %v", ids)
}

// RequireOnce asserts that the handler processed each of ids exactly once.
func (w *World) RequireOnce(ids ...string) {
	w.t.Helper()
	for _, id := range ids {
		require.Equal(w.t, 1, w.Effect(id), "event %s processed exactly once", id)
	}
}

// Redeliver publishes again to Topic what a replay of each entry published,
// as a duplicate of the republish would, then publishes the event marker and
// waits for its effect: Topic has one partition or queue, so once the marker
// is processed, the duplicates before it were too.
func (w *World) Redeliver(marker string, entries ...dlqops.Entry) {
	w.t.Helper()
	for _, e := range entries {
		require.NoError(w.t, w.Publisher.Publish(w.Topic, replayMessage(e)), "a replay delivered twice")
	}
	w.Publish(marker, "ok")
	w.WaitEffects(marker)
}

// replayMessage builds what a replay of e publishes, to deliver it again:
// the original UUID (empty for an original that had none), the original
// metadata and the replay marker.
func replayMessage(e dlqops.Entry) *message.Message {
	m := message.NewMessage(e.OriginalUUID, e.Message.Payload)
	for k, v := range e.Message.Metadata {
		if !strings.HasPrefix(k, "idempo_") || k == dlqmeta.KeyPartitionKey {
			m.Metadata.Set(k, v)
		}
	}
	if m.Metadata.Get(wire.AMQPMessageIDKey) == e.Message.UUID && e.OriginalUUID != e.Message.UUID {
		delete(m.Metadata, wire.AMQPMessageIDKey) // the copy's own message-id
	}
	m.Metadata.Set(dlqmeta.KeyReplays, strconv.Itoa(e.Replays+1))
	m.Metadata.Set(dlqmeta.KeyReplayID, e.ID)
	return m
}

// List returns the entries of topic that f selects.
func List(t *testing.T, ops *dlqops.Ops, topic string, f dlqops.Filter) []dlqops.Entry {
	t.Helper()
	var out []dlqops.Entry
	require.NoError(t, ops.List(context.Background(), topic, f, func(e dlqops.Entry) error {
		out = append(out, e)
		return nil
	}))
	return out
}

// WaitEntries waits until n unresolved entries of topic are listed and
// returns them.
func WaitEntries(t *testing.T, ops *dlqops.Ops, topic string, n int) []dlqops.Entry {
	t.Helper()
	var got []dlqops.Entry
	require.Eventually(t, func() bool {
		got = nil
		err := ops.List(context.Background(), topic, dlqops.Filter{}, func(e dlqops.Entry) error {
			got = append(got, e)
			return nil
		})
		return err == nil && len(got) == n
	}, 60*time.Second, 100*time.Millisecond, "want %d unresolved entries", n)
	return got
}

// Positions returns each entry's ID and position, to compare listings.
func Positions(es []dlqops.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID + "@" + e.Position
	}
	return out
}

// ReplayProcessesOnce runs the whole flow: it starts the consumer, poison
// events land in the DLQ, and after the fix a replay through pub processes
// each exactly once, however often it is repeated or redelivered. check, if
// not nil, makes the backend's own assertions on the i-th dead letter.
func (w *World) ReplayProcessesOnce(pub message.Publisher, check func(t *testing.T, i int, e dlqops.Entry)) {
	t := w.t
	t.Helper()
	w.Run()
	events := []string{"ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5"}
	poison := []string{"ev-0", "ev-2", "ev-4"}
	for i, id := range events {
		p := "ok"
		if i%2 == 0 {
			p = "poison"
		}
		w.Publish(id, p)
	}
	w.Publish("ev-1", "ok") // a publisher duplicate
	ops := w.Ops(pub)
	ctx := context.Background()

	entries := WaitEntries(t, ops, w.DLQTopic, 3)
	w.WaitEffects("ev-1", "ev-3", "ev-5")
	for i, e := range entries {
		require.Equal(t, poison[i], e.EventID)
		require.Equal(t, poison[i], e.OriginalUUID)
		require.Equal(t, dlq.ReasonPermanent, e.Reason)
		require.Contains(t, e.Error, "bug: cannot bill")
		require.Equal(t, "permanent", e.ErrorClass)
		require.Equal(t, w.Topic, e.OriginalTopic)
		require.Equal(t, Handler, e.Handler)
		require.Empty(t, e.Problems)
		require.Empty(t, e.Resolution)
		require.Equal(t, "poison", string(e.Message.Payload))
		if check != nil {
			check(t, i, e)
		}
	}
	again := List(t, ops, w.DLQTopic, dlqops.Filter{})
	require.Equal(t, Positions(entries), Positions(again), "listing consumes and reorders nothing")

	shown, err := ops.Show(ctx, w.DLQTopic, entries[1].ID)
	require.NoError(t, err)
	require.Equal(t, "ev-2", shown.EventID)
	_, err = ops.Show(ctx, w.DLQTopic, "no-such-id")
	require.ErrorIs(t, err, dlqops.ErrNotFound)

	dry, err := ops.Replay(ctx, w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{DryRun: true, Replayed: 3, Snapshot: dry.Snapshot}, dry, "a dry run counts what the replay would do")
	require.NotEmpty(t, dry.Snapshot)
	require.Len(t, List(t, ops, w.DLQTopic, dlqops.Filter{}), 3, "a dry run resolves nothing")

	// A dead letter after the dry run is not in its snapshot.
	w.Publish("ev-late", "poison")
	WaitEntries(t, ops, w.DLQTopic, 4)
	w.Broken.Store(false)
	res, err := ops.Replay(ctx, w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{Snapshot: dry.Snapshot})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 3}, res, "the replay acts on exactly the snapshot")
	late := List(t, ops, w.DLQTopic, dlqops.Filter{})
	require.Len(t, late, 1, "the late dead letter is left alone")
	require.Equal(t, "ev-late", late[0].EventID)
	res, err = ops.Replay(ctx, w.DLQTopic, dlqops.Filter{IDs: []string{late[0].ID}}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 1}, res)
	poison = append(poison, "ev-late")
	events = append(events, "ev-late")
	entries = append(entries, late[0])
	w.WaitEffects(poison...)

	// A second replay finds nothing to do; a replay delivered twice (a
	// duplicate of the republish) is deduplicated.
	res, err = ops.Replay(ctx, w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Replayed, "a replayed entry is not replayed again")
	w.Redeliver("ev-6", entries...)
	w.RequireOnce(events...)

	require.Empty(t, List(t, ops, w.DLQTopic, dlqops.Filter{}), "nothing unresolved is left")
	all := List(t, ops, w.DLQTopic, dlqops.Filter{All: true})
	require.Len(t, all, 4)
	for _, e := range all {
		require.Equal(t, "replayed", e.Resolution)
		require.NotEmpty(t, e.ResolvedBy, "the resolution says who")
		require.False(t, e.ResolvedAt.IsZero(), "and when")
	}
}

// IDLessReplayProcessesOnce dead-letters n records of a producer that sets
// neither an event ID nor a message UUID (produce writes them to Topic, one
// per payload, as that producer would) and checks that they list as n
// entries and replay through pub as n events, each processed once even when
// delivered twice.
func (w *World) IDLessReplayProcessesOnce(n int, pub message.Publisher, produce func(payloads []string)) {
	t := w.t
	t.Helper()
	// A replay invents no ID: the stack names a replayed ID-less event by
	// its replay marker, with the default extractor (docs/dlq.md).
	w.EventID = nil
	w.Run()
	payloads := make([]string, n)
	for i := range payloads {
		payloads[i] = "no-id-" + strconv.Itoa(i)
	}
	produce(payloads)
	ops := w.Ops(pub)
	entries := WaitEntries(t, ops, w.DLQTopic, n)
	ids := map[string]bool{}
	got := map[string]bool{}
	for _, e := range entries {
		require.Equal(t, dlq.ReasonMissingEventID, e.Reason)
		require.Empty(t, e.EventID)
		require.Empty(t, e.OriginalUUID)
		require.Empty(t, e.Problems)
		ids[e.ID] = true
		got[string(e.Message.Payload)] = true
	}
	require.Len(t, ids, n, "one entry ID per dead letter")
	require.Len(t, got, n, "every payload is listed")

	res, err := ops.Replay(context.Background(), w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: n}, res)
	replayed := make([]string, 0, n)
	for _, e := range entries {
		replayed = append(replayed, e.ID) // a replay without an original UUID carries the entry ID as its marker
	}
	w.WaitEffects(replayed...)
	w.Redeliver("idless-marker", entries...)
	w.RequireOnce(replayed...)
	require.Empty(t, List(t, ops, w.DLQTopic, dlqops.Filter{}), "nothing unresolved is left")
}

// ReplayKeepsEventID dead-letters a record of a producer that sets no
// message UUID (nor, on RabbitMQ, a message-id) but an "id" header (produce
// writes it to Topic, as kcat would), with the consumer's extractor
// extract (FirstOf(UUID, ..., Metadata("id"))), and checks that its replay
// carries no ID of its own, so the consumer extracts the same event ID:
// one effect under that ID, and a repeated replay is a duplicate.
func (w *World) ReplayKeepsEventID(pub message.Publisher, extract dedup.Extractor, produce func(id, payload string)) {
	t := w.t
	t.Helper()
	w.EventID = extract
	w.Run()
	produce("ext-1", "poison")
	ops := w.Ops(pub)
	entries := WaitEntries(t, ops, w.DLQTopic, 1)
	e := entries[0]
	require.Equal(t, "ext-1", e.EventID)
	require.Empty(t, e.OriginalUUID, "the producer set no UUID")
	w.Broken.Store(false)
	res, err := ops.Replay(context.Background(), w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 1}, res)
	w.WaitEffects("ext-1")
	w.Redeliver("keeps-marker", e)
	w.RequireOnce("ext-1")
	w.mu.Lock()
	defer w.mu.Unlock()
	require.Len(t, w.effects, 2, "the replay has the event ID of the original, no other: %v", w.effects)
}

// ParkedEntriesAreADLQ replays a failing event until it is parked (replay
// cap 1) and checks that the parking topic is a DLQ like any other: its
// entry lists without problems, with the entry ID, original topic, reason
// and replay count of the dead letter it parks, and shows; a replay from
// it goes to the original topic (no cap there) and is processed once.
func (w *World) ParkedEntriesAreADLQ(pub message.Publisher) {
	t := w.t
	t.Helper()
	w.Run()
	w.Publish("park-0", "poison")
	ctx := context.Background()
	ops, err := dlqops.New(dlqops.Config{Source: w.Source, Resolutions: w.Resolutions, Publisher: pub, MaxReplays: 1})
	require.NoError(t, err)
	first := WaitEntries(t, ops, w.DLQTopic, 1)
	// By ID: a stream read may reach the copy this replay's failure adds.
	res, err := ops.Replay(ctx, w.DLQTopic, dlqops.Filter{IDs: []string{first[0].ID}}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 1}, res)
	again := WaitEntries(t, ops, w.DLQTopic, 1) // the replay failed again
	require.Equal(t, 1, again[0].Replays)
	require.NotEqual(t, first[0].ID, again[0].ID)
	res, err = ops.Replay(ctx, w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Parked: 1}, res)

	parking := dlqops.ParkingTopic(w.DLQTopic)
	parked := WaitEntries(t, ops, parking, 1)
	p := parked[0]
	require.Empty(t, p.Problems, "a parked entry is an idempo dead letter")
	require.Equal(t, again[0].ID, p.ID, "it keeps its entry ID")
	require.Equal(t, w.Topic, p.OriginalTopic)
	require.Equal(t, "park-0", p.EventID)
	require.Equal(t, "park-0", p.OriginalUUID)
	require.Equal(t, Handler, p.Handler)
	require.Equal(t, dlq.ReasonPermanent, p.Reason)
	require.Equal(t, 1, p.Replays)
	require.Equal(t, again[0].DeadLetteredAt, p.DeadLetteredAt)
	shown, err := ops.Show(ctx, parking, p.ID)
	require.NoError(t, err)
	require.Empty(t, shown.Problems)

	w.Broken.Store(false)
	dry, err := ops.Replay(ctx, parking, dlqops.Filter{}, dlqops.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{DryRun: true, Replayed: 1, Snapshot: dry.Snapshot}, dry, "a replay from the parking topic is not parked again")
	res, err = ops.Replay(ctx, parking, dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 1}, res)
	w.WaitEffects("park-0")
	w.RequireOnce("park-0")
	require.Empty(t, List(t, ops, parking, dlqops.Filter{}))
}

// CrashHelperEnv, when set in a test binary's environment, makes its
// TestMain run the crash helper of [World.ReplayCrashLosesNothing]
// instead of the tests.
const CrashHelperEnv = "IDEMPO_DLQTEST_CRASH_HELPER"

// hangingPublisher republishes, prints how many it did and then hangs, so
// that the test can kill the process right after a confirmed republish.
type hangingPublisher struct {
	inner message.Publisher
	n     atomic.Int32
}

func (p *hangingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.inner.Publish(topic, msgs...); err != nil {
		return err
	}
	fmt.Printf("republished %d\n", p.n.Add(1))
	time.Sleep(time.Hour) // killed here
	return nil
}

func (p *hangingPublisher) Close() error { return p.inner.Close() }

// CrashHelper is the body of the crash helper process: it replays every
// unresolved entry of dlqTopic through pub, hanging after the first
// republish until it is killed. It returns the process's exit status.
func CrashHelper(src dlqops.Source, store resolution.Store, pub message.Publisher, dlqTopic string) int {
	ops, err := dlqops.New(dlqops.Config{Source: src, Resolutions: store, Publisher: &hangingPublisher{inner: pub}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	if _, err := ops.Replay(context.Background(), dlqTopic, dlqops.Filter{}, dlqops.ReplayOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 2
	}
	return 0
}

// ReplayCrashLosesNothing kills a replay with SIGKILL right after its first
// republish: no dead letter is lost, and a second replay through pub plus
// consumption gives each event's effect at most once. helperEnv is the
// environment the helper process (this test binary with [CrashHelperEnv]
// set) needs to reach the backend and the resolution store; it gets
// IDEMPO_DLQ_TOPIC too. The resolution store must be shared with that
// process.
func (w *World) ReplayCrashLosesNothing(pub message.Publisher, helperEnv ...string) {
	t := w.t
	t.Helper()
	w.Run()
	poison := []string{"c-0", "c-1", "c-2"}
	for _, id := range poison {
		w.Publish(id, "poison")
	}
	ops := w.Ops(pub)
	entries := WaitEntries(t, ops, w.DLQTopic, 3)
	w.Broken.Store(false)

	exe, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), CrashHelperEnv+"=1", "IDEMPO_DLQ_TOPIC="+w.DLQTopic), helperEnv...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "the crash helper ended before its first republish")
	require.Equal(t, "republished 1", strings.TrimSpace(line))
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	// Nothing lost: every entry is still in the DLQ and still listed; the
	// one caught mid-way shows as in progress until the replay's claim
	// runs out, the two never republished are unresolved.
	all := List(t, ops, w.DLQTopic, dlqops.Filter{All: true})
	require.Equal(t, Positions(entries), Positions(all))
	unresolved := List(t, ops, w.DLQTopic, dlqops.Filter{})
	require.Len(t, unresolved, 3, "an entry held by a crashed replay is not resolved")
	require.Equal(t, dlqops.InProgress, all[0].Resolution)
	require.Empty(t, all[1].Resolution)
	require.Empty(t, all[2].Resolution)

	res, err := ops.Replay(context.Background(), w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 2, Skipped: 1}, res, "the entry the crashed replay holds waits for its claim to run out")
	w.WaitEffects(poison...)
	// The crashed replay's entry is replayed again once its claim runs out;
	// simulate that republish now: dedup absorbs it.
	w.Redeliver("c-marker", entries[0])
	w.RequireOnce(poison...)
}
