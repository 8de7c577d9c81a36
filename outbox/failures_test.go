package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
	"github.com/idempo/idempo/retry"
)

// TestPublishFailures: a transient failure is retried with the later rows
// of its key waiting; a permanent one goes to the dead table and the later
// rows of its key go on; Requeue publishes it again.
func TestPublishFailures(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		transient, poison := msg("flaky", 1), msg("bad", 1)
		var flakyFails atomic.Int32
		var poisonOK atomic.Bool
		rec := &recorder{fail: func(_ string, m *message.Message) error {
			switch m.UUID {
			case transient.UUID:
				if flakyFails.Add(1) <= 3 {
					return errTransient
				}
			case poison.UUID:
				if !poisonOK.Load() {
					return retry.Permanent(fmt.Errorf("message too large"))
				}
			}
			return nil
		}}
		var events sync.Map
		cfg := fast(rec)
		cfg.Observer = func(ev outbox.RelayEvent) {
			v, _ := events.LoadOrStore(ev.Kind, new(atomic.Int64))
			v.(*atomic.Int64).Add(int64(ev.Count))
		}
		r, stop := runRelay(t, e.ob, cfg)
		defer stop()
		e.write(t, "t", transient, msg("flaky", 2), msg("flaky", 3), poison, msg("bad", 2), msg("other", 1))
		waitFor(t, 30*time.Second, "all but the poison published", func() bool { return rec.unique() == 5 })
		got := rec.snapshot()
		checkKeyOrder(t, got)
		require.GreaterOrEqual(t, flakyFails.Load(), int32(4), "retried after three failures")
		waitFor(t, 30*time.Second, "every row marked", func() bool { return e.count(t, "", "") == 0 })
		st := r.Stats()
		require.EqualValues(t, 1, st.Dead)
		require.GreaterOrEqual(t, st.Failures, int64(2), "two failed rows, the transient one at least once")
		dead, err := e.ob.Dead(context.Background(), "t", 10)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, poison.UUID, dead[0].UUID)
		require.Equal(t, "bad", dead[0].Key)
		require.Contains(t, dead[0].Reason, "message too large")
		require.Equal(t, 1, dead[0].Attempts)
		require.Equal(t, "1", dead[0].Metadata["seq"])
		require.WithinDuration(t, time.Now(), dead[0].DeadAt, time.Minute)
		status, err := e.ob.Status(context.Background())
		require.NoError(t, err)
		require.Equal(t, []outbox.TopicStatus{{Topic: "t", Dead: 1}}, status)
		for k, want := range map[outbox.RelayEventKind]int64{outbox.EventDead: 1, outbox.EventPublished: 5} {
			waitFor(t, 10*time.Second, fmt.Sprintf("%d events of kind %d", want, k), func() bool {
				v, ok := events.Load(k)
				return ok && v.(*atomic.Int64).Load() == want
			})
		}

		poisonOK.Store(true)
		n, err := e.ob.Requeue(context.Background(), "t")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		waitFor(t, 30*time.Second, "the requeued row published", func() bool { return rec.unique() == 6 })
		got = rec.snapshot()
		require.Equal(t, poison.UUID, got[len(got)-1].uuid)
		require.Zero(t, e.count(t, "_dead", ""))
	})
}

// TestMaxAttempts: a row failing every time goes dead after MaxAttempts.
func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sqlstore.SQLite, nil)
	rec := &recorder{fail: func(string, *message.Message) error { return errTransient }}
	cfg := fast(rec)
	cfg.MaxAttempts = 3
	r, stop := runRelay(t, e.ob, cfg)
	defer stop()
	e.write(t, "t", msg("a", 1))
	waitFor(t, 30*time.Second, "the row dead", func() bool { return r.Stats().Dead == 1 })
	dead, err := e.ob.Dead(context.Background(), "", 0)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, 3, dead[0].Attempts)
	require.EqualValues(t, 3, r.Stats().Failures)
}

// TestRetentionBoundsTable: with a retention, sent rows are deleted in
// batches and the table does not grow with the load.
func TestRetentionBoundsTable(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		rec := &recorder{}
		cfg := fast(rec)
		cfg.Retention = 200 * time.Millisecond
		_, stop := runRelay(t, e.ob, cfg)
		defer stop()
		written := 0
		end := time.Now().Add(3 * time.Second)
		for time.Now().Before(end) {
			ms := make([]*message.Message, 20)
			for i := range ms {
				ms[i] = msg(fmtKey(i), written+i)
			}
			e.write(t, "t", ms...)
			written += len(ms)
			time.Sleep(10 * time.Millisecond)
		}
		require.Less(t, e.count(t, "", ""), written/2, "sent rows deleted under load")
		waitFor(t, 30*time.Second, "every row published", func() bool { return rec.unique() == written })
		waitFor(t, 30*time.Second, "sent rows deleted", func() bool { return e.count(t, "", "") < written/4 })
		waitFor(t, 30*time.Second, "every row marked", func() bool { return e.count(t, "", "sent_at IS NULL") == 0 })
	})
}

// TestBackoffHoldsKey: a failed row is not tried again before its backoff,
// and the later rows of its key wait for it while other keys go on.
func TestBackoffHoldsKey(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		stuck := msg("stuck", 1)
		var calls atomic.Int32
		rec := &recorder{fail: func(_ string, m *message.Message) error {
			if m.UUID == stuck.UUID {
				calls.Add(1)
				return errTransient
			}
			return nil
		}}
		cfg := fast(rec)
		cfg.Backoff = outbox.Backoff{InitialInterval: time.Hour, MaxInterval: time.Hour}
		r, stop := runRelay(t, e.ob, cfg)
		defer stop()
		e.write(t, "t", stuck, msg("stuck", 2), msg("other", 1))
		waitFor(t, 20*time.Second, "the other key published", func() bool { return rec.unique() == 1 && r.Stats().Failures == 1 })
		for i := 2; i <= 4; i++ { // later passes
			e.write(t, "t", msg("other", i))
			waitFor(t, 20*time.Second, "the other key published", func() bool { return rec.unique() == i })
		}
		for _, p := range rec.snapshot() {
			require.Equal(t, "other", p.key, "the stuck key's later row waits")
		}
		require.EqualValues(t, 2, calls.Load(), "tried in the batch and alone, then not before the backoff")
	})
}

// TestOutageCountsNoAttempts: while the publisher fails every row of
// several keys, attempts are not counted, so no row goes dead; the rows are
// published once it is back.
func TestOutageCountsNoAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sqlstore.SQLite, nil)
	var down atomic.Bool
	var calls atomic.Int64
	down.Store(true)
	rec := &recorder{fail: func(string, *message.Message) error {
		if down.Load() {
			calls.Add(1)
			return errTransient
		}
		return nil
	}}
	cfg := fast(rec)
	cfg.MaxAttempts = 2
	r, stop := runRelay(t, e.ob, cfg)
	defer stop()
	const rows = 50
	ms := make([]*message.Message, rows)
	for i := range ms {
		ms[i] = msg(fmtKey(i), 1)
	}
	e.write(t, "t", ms...)
	waitFor(t, 20*time.Second, "several failed rounds", func() bool { return r.Stats().Batches >= 5 })
	down.Store(false)
	st := r.Stats()
	require.Zero(t, st.Dead, "an outage sends nothing to the dead table")
	require.LessOrEqual(t, calls.Load(), 3*st.Batches+3, "a batch stops after two keys failed: no publish per row")
	require.Zero(t, e.count(t, "", "attempts > 0"))
	waitFor(t, 20*time.Second, "every row published after the outage", func() bool { return rec.unique() == rows })
}
