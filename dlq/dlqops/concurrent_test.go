package dlqops_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// readOnly is a resolution store that fails the test on any write.
type readOnly struct {
	resolution.Store
	t *testing.T
}

var errWrite = errors.New("a read-only operation wrote to the resolution store")

func (r readOnly) Begin(context.Context, resolution.Key, string, time.Duration) (resolution.Begun, error) {
	r.t.Error(errWrite)
	return resolution.Begun{}, errWrite
}

func (r readOnly) Finish(context.Context, resolution.Key, string, resolution.Outcome) (resolution.Record, error) {
	r.t.Error(errWrite)
	return resolution.Record{}, errWrite
}

func (r readOnly) Abort(context.Context, resolution.Key, string) error {
	r.t.Error(errWrite)
	return errWrite
}

// A list (and a show, and a dry run) beside a running replay writes nothing,
// sees the entry the replay holds as in progress and the rest as they are,
// and the replay skips nothing.
func TestListBesideRunningReplaySkipsNothingWritesNothing(t *testing.T) {
	const n = 12
	bus := newSliceDLQ()
	for i := range n {
		copyOf(t, bus, "orders.dlq", "e"+strconv.Itoa(i), map[string]string{dlqmeta.KeyOriginalTopic: "orders"})
	}
	st := memstore.New(nil)
	published := make(chan struct{})
	proceed := make(chan struct{})
	stop := make(chan struct{}) // closes when the test ends: a paused replay goes on
	bus.onPublish = func(string) {
		select {
		case published <- struct{}{}:
		case <-stop:
			return
		case <-time.After(30 * time.Second):
			t.Error("nobody looked at the paused replay within 30s")
			return
		}
		select {
		case <-proceed:
		case <-stop:
		case <-time.After(30 * time.Second):
			t.Error("the replay was not let go within 30s")
		}
	}
	replayer := newOps(t, bus, st, bus)
	lister := newOps(t, bus, readOnly{Store: st, t: t}, nil)
	type outcome struct {
		res dlqops.Result
		err error
	}
	done := make(chan outcome, 1)
	finished := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		<-finished
	})
	go func() {
		defer close(finished)
		res, err := replayer.Replay(context.Background(), "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{})
		done <- outcome{res, err}
	}()
	ctx := context.Background()
	for k := range n {
		select {
		case <-published:
		case <-time.After(30 * time.Second):
			t.Fatalf("the replay did not reach entry %d within 30s", k)
		}
		// The replay holds e<k> and has republished it, not yet resolved.
		listed := list(t, lister, "orders.dlq", dlqops.Filter{})
		require.Len(t, listed, n-k, "every unresolved entry is listed")
		require.Equal(t, "e"+strconv.Itoa(k), listed[0].ID)
		require.Equal(t, dlqops.InProgress, listed[0].Resolution, "the held entry shows in progress")
		require.Equal(t, "tester", listed[0].ResolvedBy)
		for _, e := range listed[1:] {
			require.Empty(t, e.Resolution)
		}
		require.Len(t, list(t, lister, "orders.dlq", dlqops.Filter{All: true}), n)
		e, err := lister.Show(ctx, "orders.dlq", "e"+strconv.Itoa(k))
		require.NoError(t, err)
		require.Equal(t, dlqops.InProgress, e.Resolution)
		dry, err := lister.Replay(ctx, "orders.dlq", dlqops.Filter{}, dlqops.ReplayOptions{DryRun: true})
		require.NoError(t, err)
		require.Equal(t, n-k-1, dry.Replayed)
		require.Equal(t, 1, dry.Skipped, "the held entry would be skipped")
		proceed <- struct{}{}
	}
	var got outcome
	select {
	case got = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the replay did not end within 30s")
	}
	require.NoError(t, got.err)
	require.Equal(t, dlqops.Result{Replayed: n}, got.res, "the replay skipped nothing")
	require.Len(t, bus.take("orders"), n)
	require.Empty(t, list(t, lister, "orders.dlq", dlqops.Filter{}))
}

// A replay or purge given a dry run's snapshot acts on exactly the entries
// it counted: not on later dead letters, and entries another operator
// resolved meanwhile count as skipped.
func TestSnapshotActsOnExactlyWhatTheDryRunCounted(t *testing.T) {
	bus := newSliceDLQ()
	bus.partitions = 2
	add := func(ids ...string) {
		for _, id := range ids {
			copyOf(t, bus, "t.dlq", id, map[string]string{dlqmeta.KeyOriginalTopic: "orders", dlqmeta.KeyHandler: "billing"})
		}
	}
	add("e0", "e1", "e2", "e3")
	st := memstore.New(nil)
	alice := newOps(t, bus, st, bus)
	bob, err := dlqops.New(dlqops.Config{Source: bus, Resolutions: st, Publisher: bus, Operator: "bob"})
	require.NoError(t, err)
	ctx := context.Background()
	f := dlqops.Filter{Handler: "billing"}

	dry, err := alice.Purge(ctx, "t.dlq", f, dlqops.PurgeOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, 4, dry.Purged)
	add("e4", "e5", "e6") // dead-lettered after the dry run, in both partitions
	res, err := bob.Purge(ctx, "t.dlq", dlqops.Filter{IDs: []string{"e1"}}, dlqops.PurgeOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Purged)

	again, err := alice.Purge(ctx, "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{DryRun: true, Snapshot: dry.Snapshot})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{DryRun: true, Purged: 3, Skipped: 1, Snapshot: dry.Snapshot}, again, "a dry run of a snapshot previews it")
	res, err = alice.Purge(ctx, "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{Snapshot: dry.Snapshot})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Purged: 3, Skipped: 1}, res, "the counts add up to the dry run's")
	var left []string
	for _, e := range list(t, alice, "t.dlq", dlqops.Filter{}) {
		left = append(left, e.ID)
	}
	require.ElementsMatch(t, []string{"e4", "e5", "e6"}, left, "later dead letters are left alone")
	e1, err := alice.Show(ctx, "t.dlq", "e1")
	require.NoError(t, err)
	require.Equal(t, "bob", e1.ResolvedBy)

	// A replay snapshot serves only the replay it was counted for.
	rdry, err := alice.Replay(ctx, "t.dlq", f, dlqops.ReplayOptions{DryRun: true, To: "fixed"})
	require.NoError(t, err)
	require.Equal(t, 3, rdry.Replayed)
	for name, call := range map[string]func() error{
		"a purge": func() error {
			_, err := alice.Purge(ctx, "t.dlq", f, dlqops.PurgeOptions{Snapshot: rdry.Snapshot})
			return err
		},
		"another topic": func() error {
			_, err := alice.Replay(ctx, "u.dlq", f, dlqops.ReplayOptions{Snapshot: rdry.Snapshot})
			return err
		},
		"another filter": func() error {
			_, err := alice.Replay(ctx, "t.dlq", dlqops.Filter{Handler: "x"}, dlqops.ReplayOptions{Snapshot: rdry.Snapshot})
			return err
		},
		"another to": func() error {
			_, err := alice.Replay(ctx, "t.dlq", f, dlqops.ReplayOptions{To: "y", Snapshot: rdry.Snapshot})
			return err
		},
		"a damaged token": func() error {
			_, err := alice.Replay(ctx, "t.dlq", f, dlqops.ReplayOptions{Snapshot: rdry.Snapshot[:20]})
			return err
		},
		"something else": func() error {
			_, err := alice.Replay(ctx, "t.dlq", f, dlqops.ReplayOptions{Snapshot: "hello"})
			return err
		},
	} {
		require.ErrorIs(t, call(), dlqops.ErrSnapshot, name)
	}
	add("e7")
	res, err = alice.Replay(ctx, "t.dlq", dlqops.Filter{}, dlqops.ReplayOptions{Snapshot: rdry.Snapshot})
	require.NoError(t, err)
	require.Equal(t, dlqops.Result{Replayed: 3}, res)
	require.Len(t, bus.take("fixed"), 3, "the snapshot's destination")
	left = nil
	for _, e := range list(t, alice, "t.dlq", dlqops.Filter{}) {
		left = append(left, e.ID)
	}
	require.Equal(t, []string{"e7"}, left)
}

func FuzzSnapshotToken(f *testing.F) {
	bus := newSliceDLQ()
	copyOf(&testing.T{}, bus, "t.dlq", "e0", nil)
	ops, err := dlqops.New(dlqops.Config{Source: bus, Resolutions: memstore.New(nil), Publisher: bus})
	if err != nil {
		f.Fatal(err)
	}
	dry, err := ops.Purge(context.Background(), "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{DryRun: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(dry.Snapshot)
	f.Add("s1.")
	f.Add("s1.e30")
	f.Add(`s1.eyJ2IjoxLCJrIjoicHVyZ2UiLCJ0IjoidC5kbHEiLCJmIjp7fSwiZSI6eyIiOi0xfSwibiI6LTF9`)
	f.Fuzz(func(t *testing.T, token string) {
		res, err := ops.Purge(context.Background(), "t.dlq", dlqops.Filter{}, dlqops.PurgeOptions{DryRun: true, Snapshot: token})
		if err != nil {
			require.ErrorIs(t, err, dlqops.ErrSnapshot)
			return
		}
		require.LessOrEqual(t, res.Purged, 1, "a snapshot never reaches past the DLQ")
	})
}
