package dlqtest

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
)

// readOnly is a resolution store that refuses, and reports, any write.
type readOnly struct {
	resolution.Store
	report func(error)
}

var errWrite = errors.New("dlqtest: a read-only operation wrote to the resolution store")

func (r readOnly) Begin(context.Context, resolution.Key, string, time.Duration) (resolution.Begun, error) {
	r.report(errWrite)
	return resolution.Begun{}, errWrite
}

func (r readOnly) Finish(context.Context, resolution.Key, string, resolution.Outcome) (resolution.Record, error) {
	r.report(errWrite)
	return resolution.Record{}, errWrite
}

func (r readOnly) Abort(context.Context, resolution.Key, string) error {
	r.report(errWrite)
	return errWrite
}

// pausingPublisher republishes, then waits until the test has looked.
type pausingPublisher struct {
	inner              message.Publisher
	published, proceed chan struct{}
	// stop closes when the test ends: a replay still paused goes on.
	stop   chan struct{}
	report func(string)
}

func (p *pausingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.inner.Publish(topic, msgs...); err != nil {
		return err
	}
	select {
	case p.published <- struct{}{}:
	case <-p.stop:
		return nil
	case <-time.After(60 * time.Second):
		p.report("nobody looked at the paused replay within 60s")
		return nil
	}
	select {
	case <-p.proceed:
	case <-p.stop:
	case <-time.After(60 * time.Second):
		p.report("the paused replay was not let go within 60s")
	}
	return nil
}

func (p *pausingPublisher) Close() error { return nil }

// ListBesideReplay pauses a replay through pub after each republish and
// lists the DLQ meanwhile through operations whose resolution store refuses
// writes: the listing writes nothing, shows the held entry in progress and
// every other unresolved entry, and the replay skips nothing.
func (w *World) ListBesideReplay(pub message.Publisher) {
	t := w.t
	t.Helper()
	w.Run()
	poison := []string{"b-0", "b-1", "b-2"}
	for _, id := range poison {
		w.Publish(id, "poison")
	}
	WaitEntries(t, w.Ops(nil), w.DLQTopic, len(poison))
	w.Broken.Store(false)

	p := &pausingPublisher{inner: pub, published: make(chan struct{}), proceed: make(chan struct{}), stop: make(chan struct{}), report: func(s string) { t.Error(s) }}
	replayer := w.Ops(p)
	lister, err := dlqops.New(dlqops.Config{Source: w.Source, Resolutions: readOnly{Store: w.Resolutions, report: func(err error) { t.Error(err) }}})
	require.NoError(t, err)
	type outcome struct {
		res dlqops.Result
		err error
	}
	done := make(chan outcome, 1)
	finished := make(chan struct{})
	t.Cleanup(func() {
		close(p.stop) // a failed test lets the replay finish
		<-finished
	})
	go func() {
		defer close(finished)
		res, err := replayer.Replay(context.Background(), w.DLQTopic, dlqops.Filter{}, dlqops.ReplayOptions{})
		done <- outcome{res, err}
	}()
	for k := range poison {
		select {
		case <-p.published:
		case <-time.After(60 * time.Second):
			t.Fatalf("the replay did not republish entry %d within 60s", k)
		}
		listed := List(t, lister, w.DLQTopic, dlqops.Filter{})
		require.Len(t, listed, len(poison)-k, "every unresolved entry is listed beside the replay")
		require.Equal(t, poison[k], listed[0].EventID)
		require.Equal(t, dlqops.InProgress, listed[0].Resolution, "the entry the replay holds shows in progress")
		for _, e := range listed[1:] {
			require.Empty(t, e.Resolution)
		}
		p.proceed <- struct{}{}
	}
	var got outcome
	select {
	case got = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the replay did not end within 60s")
	}
	require.NoError(t, got.err)
	require.Equal(t, dlqops.Result{Replayed: len(poison)}, got.res, "the replay skipped nothing")
	w.WaitEffects(poison...)
	w.RequireOnce(poison...)
	require.Empty(t, List(t, lister, w.DLQTopic, dlqops.Filter{}))
}
