package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/outbox"
)

// failingOutbox writes through the real outbox, then fails the first write
// of each event: what it wrote must roll back with the business write.
type failingOutbox struct {
	next  *outbox.Outbox
	seen  sync.Map // first output's UUID → struct{}
	fails atomic.Int32
}

func (f *failingOutbox) WriteInTx(ctx context.Context, topic string, msgs ...*message.Message) error {
	if err := f.next.WriteInTx(ctx, topic, msgs...); err != nil {
		return err
	}
	if _, again := f.seen.LoadOrStore(msgs[0].UUID, struct{}{}); !again {
		f.fails.Add(1)
		return errors.New("failure after the outbox write")
	}
	return nil
}

// Transactional inbox with the outbox: every event's business write, its
// two outputs and its completion commit together. Twins run on two stacks
// with four workers each, and each event's first outbox write fails after
// the rows were written. Afterwards each event has exactly one business
// row, and a relay drains exactly two outputs per event with the derived
// UUIDs: nothing lost, nothing from a rolled-back attempt.
func TestInboxOutboxOutputsCommitWithTheEffect(t *testing.T) {
	t.Parallel()
	envs := inboxEnvs()
	for _, env := range []inboxEnv{envs[0], envs[1], envs[5], envs[6]} {
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			db := env.open(t)
			suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
			table, effects, obTable := "iob_dedup_"+suffix, "iob_effects_"+suffix, "iob_outbox_"+suffix
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table, InboxTxOptions: env.txOpts})
			require.NoError(t, err)
			require.NoError(t, st.Migrate(ctx))
			ob, err := outbox.New(db, &outbox.Options{Table: obTable})
			require.NoError(t, err)
			require.NoError(t, ob.Migrate(ctx))
			_, err = db.ExecContext(ctx, "CREATE TABLE "+effects+" (event_id VARCHAR(64) NOT NULL)")
			require.NoError(t, err)
			t.Cleanup(func() {
				for _, tb := range append([]string{effects, table}, outboxTables(obTable)...) {
					_, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+tb)
				}
			})
			insert := "INSERT INTO " + effects + " (event_id) VALUES (?)"
			if st.Dialect() == sqlstore.Postgres {
				insert = "INSERT INTO " + effects + " (event_id) VALUES ($1)"
			}
			handler := func(m *message.Message) ([]*message.Message, error) {
				tx, ok := sqlstore.TxFromContext(m.Context())
				if !ok {
					return nil, errors.New("no transaction in the handler's context")
				}
				if _, err := tx.ExecContext(m.Context(), insert, m.UUID); err != nil {
					return nil, err
				}
				return []*message.Message{
					message.NewMessage("", []byte("first of "+m.UUID)),
					message.NewMessage("", []byte("second of "+m.UUID)),
				}, nil
			}
			policy := fastRetry()
			policy.MaxAttempts = 20
			fo := &failingOutbox{next: ob}
			dead := newCapture()
			var stacks []*middleware.Stack
			for range 2 {
				s, err := middleware.New(middleware.Config{
					Store: st, DLQ: dlq.Config{Publisher: dead}, Transactional: true, Scope: "iob",
					Outbox: fo, OutputTopic: "follow-ups",
					Retry: policy, NackDelay: time.Millisecond, Logger: quiet,
				})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				stacks = append(stacks, s)
			}
			const events, copies = 40, 3
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Go(func() {
					h := stacks[w%2].Middleware(handler)
					for i := range events * copies {
						id := fmt.Sprintf("ev-%d", (i+w*7)%events)
						for {
							if ctx.Err() != nil {
								errs <- fmt.Errorf("worker %d: %s not settled in time", w, id)
								return
							}
							m := message.NewMessage(id, nil)
							m.SetContext(context.Background())
							_, err := h(m)
							if err == nil {
								break
							}
							if !errors.Is(err, middleware.ErrInProgressElsewhere) && !errors.Is(err, dedup.ErrLeaseLost) {
								errs <- err
								return
							}
						}
					}
				})
			}
			waitGroup(t, &wg, 4*time.Minute, "the inbox workers")
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.Zero(t, dead.count(), "nothing was dead-lettered")
			require.EqualValues(t, events, fo.fails.Load(), "each event's first outbox write failed")

			var n int
			require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+effects).Scan(&n))
			require.Equal(t, events, n, "one business row per event")

			got := drainOutbox(ctx, t, ob, "follow-ups", 2*events)
			var want []string
			for i := range events {
				id := fmt.Sprintf("ev-%d", i)
				want = append(want, middleware.OutputUUID("iob", id, 0), middleware.OutputUUID("iob", id, 1))
			}
			requireSameOnce(t, want, got)
		})
	}
}

// requireSameOnce fails unless got holds each of want exactly once and
// nothing else, naming what is missing, doubled or foreign.
func requireSameOnce(t *testing.T, want, got []string) {
	t.Helper()
	n := map[string]int{}
	for _, g := range got {
		n[g]++
	}
	var missing, doubled, foreign []string
	for _, w := range want {
		switch c := n[w]; {
		case c == 0:
			missing = append(missing, w)
		case c > 1:
			doubled = append(doubled, fmt.Sprintf("%s ×%d", w, c))
		}
		delete(n, w)
	}
	for g := range n {
		foreign = append(foreign, g)
	}
	require.Empty(t, missing, "outputs lost (%d of %d)", len(missing), len(want))
	require.Empty(t, doubled, "outputs published more than once: a rolled-back attempt's outputs escaped its transaction")
	require.Empty(t, foreign, "outputs nobody committed")
}

// drainOutbox runs a relay into a capture until want messages arrived and
// the outbox has nothing pending, and returns their UUIDs, sorted.
func drainOutbox(ctx context.Context, t *testing.T, ob *outbox.Outbox, topic string, want int) []string {
	t.Helper()
	pub := newCapture()
	relay, err := outbox.NewRelay(ob, outbox.RelayConfig{Publisher: pub, PollInterval: 5 * time.Millisecond})
	require.NoError(t, err)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	deadline := time.Now().Add(time.Minute)
	for len(pub.on(topic)) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// A little longer: anything beyond want would be a phantom output.
	time.Sleep(200 * time.Millisecond)
	stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not stop within 30s of its context ending")
	}
	var uuids []string
	for _, m := range pub.on(topic) {
		uuids = append(uuids, m.UUID)
	}
	sort.Strings(uuids)
	st, err := ob.Status(ctx)
	require.NoError(t, err)
	for _, s := range st {
		require.Zero(t, s.Pending, "topic %s has rows the relay did not publish", s.Topic)
	}
	return uuids
}

// outboxTables are the outbox's table and its companions, to drop.
func outboxTables(table string) []string {
	return []string{table, table + "_leases", table + "_dead", table + "_keys", table + "_meta"}
}

func TestOutboxConfigIsChecked(t *testing.T) {
	t.Parallel()
	db := inboxEnv{dialect: sqlstore.SQLite}.open(t)
	st, err := sqlstore.New(db, nil)
	require.NoError(t, err)
	ob, err := outbox.New(db, nil)
	require.NoError(t, err)
	base := middleware.Config{Store: st, DLQ: dlq.Config{Publisher: newCapture()}, Transactional: true, Outbox: ob}
	_, err = middleware.New(base)
	require.NoError(t, err)

	for _, tc := range []struct {
		edit func(*middleware.Config)
		want string
	}{
		{func(c *middleware.Config) { c.OutputPublisher = newCapture() }, "Outbox and OutputPublisher are both set"},
		{func(c *middleware.Config) { c.Transactional = false }, "Outbox needs Transactional"},
		{func(c *middleware.Config) { c.AllowMissingEventID = true }, "AllowMissingEventID"},
	} {
		c := base
		tc.edit(&c)
		_, err := middleware.New(c)
		require.ErrorIs(t, err, middleware.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.want)
	}
}

// Without the inbox's transaction in the context the outbox refuses to
// write (rather than writing outside any transaction).
func TestOutboxWriteInTxNeedsTheInboxTransaction(t *testing.T) {
	t.Parallel()
	db := inboxEnv{dialect: sqlstore.SQLite}.open(t)
	ob, err := outbox.New(db, nil)
	require.NoError(t, err)
	err = ob.WriteInTx(context.Background(), "t", message.NewMessage("u", nil))
	require.ErrorIs(t, err, outbox.ErrNoInboxTx)
}
