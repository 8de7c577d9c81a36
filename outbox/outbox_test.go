package outbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

func TestMain(m *testing.M) {
	if runChildIfAsked() {
		return
	}
	// sarama's metrics registry starts a goroutine that never ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// fast is a relay configuration for tests: short lease and poll.
func fast(p message.Publisher) outbox.RelayConfig {
	return outbox.RelayConfig{
		Publisher: p, Lease: time.Second, PollInterval: 10 * time.Millisecond,
		Backoff: outbox.Backoff{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond},
		Logger:  testLogger,
	}
}

func forEachDialect(t *testing.T, f func(t *testing.T, d sqlstore.Dialect)) {
	t.Helper()
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			f(t, d)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sqlstore.SQLite, nil)
	for name, o := range map[string]*outbox.Options{
		"table":   {Table: "bad name"},
		"buckets": {Buckets: 5000},
		"dialect": {Dialect: "oracle"},
	} {
		_, err := outbox.New(e.db, o)
		require.ErrorIs(t, err, outbox.ErrInvalidConfig, name)
	}
	_, err := outbox.New(e.db, &outbox.Options{Table: e.ob.Table(), Buckets: 8})
	require.ErrorIs(t, err, outbox.ErrInvalidConfig, "a different bucket count for a migrated table")
	require.ErrorContains(t, err, "Buckets")
	for name, c := range map[string]outbox.RelayConfig{
		"publisher": {},
		"lease":     {Publisher: &recorder{}, Lease: time.Millisecond},
		"batch":     {Publisher: &recorder{}, BatchSize: -1},
		"backoff":   {Publisher: &recorder{}, Backoff: outbox.Backoff{InitialInterval: time.Second, MaxInterval: time.Millisecond}},
	} {
		_, err := outbox.NewRelay(e.ob, c)
		require.ErrorIs(t, err, outbox.ErrInvalidConfig, name)
	}
}

func TestWriteRollbackAndInvalid(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		ctx := context.Background()
		tx, err := e.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, e.ob.Publisher(ctx, tx).Publish("t", msg("a", 1), msg("b", 1)))
		require.NoError(t, tx.Rollback())
		require.Zero(t, e.count(t, "", ""), "a rolled back transaction writes nothing")

		tx, err = e.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.ErrorIs(t, e.ob.Write(ctx, tx, "", msg("a", 1)), outbox.ErrInvalidMessage)
		require.ErrorIs(t, e.ob.Write(ctx, tx, "t", message.NewMessage("", nil)), outbox.ErrInvalidMessage)
		require.ErrorIs(t, e.ob.Write(ctx, tx, "t", nil), outbox.ErrInvalidMessage)
		require.NoError(t, tx.Rollback())

		e.write(t, "t", msg("a", 1), msg("a", 2), msg("b", 1))
		require.Equal(t, 3, e.count(t, "", ""))
		st, err := e.ob.Status(ctx)
		require.NoError(t, err)
		require.Len(t, st, 1)
		require.Equal(t, "t", st[0].Topic)
		require.EqualValues(t, 3, st[0].Pending)
		require.Positive(t, st[0].OldestPending)
	})
}

// TestWriteRefusesUnstorableText: text the databases would refuse or store
// changed (NUL bytes, invalid UTF-8) is refused on every database with
// ErrInvalidMessage, and nothing is written.
func TestWriteRefusesUnstorableText(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		ctx := context.Background()
		badMeta := msg("a", 1)
		badMeta.Metadata.Set("k\xffey", "v")
		badValue := msg("a", 2)
		badValue.Metadata.Set("odd", "v\xfe")
		for name, c := range map[string]struct {
			topic string
			m     *message.Message
		}{
			"topic NUL":       {"t\x00x", msg("a", 1)},
			"topic not UTF-8": {"t\xff", msg("a", 1)},
			"UUID NUL":        {"t", message.NewMessage("a\x00b", nil)},
			"key NUL":         {"t", msg("k\x00", 1)},
			"key not UTF-8":   {"t", msg("k\xff", 1)},
			"metadata key":    {"t", badMeta},
			"metadata value":  {"t", badValue},
		} {
			tx, err := e.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			err = e.ob.Write(ctx, tx, c.topic, c.m)
			require.ErrorIs(t, err, outbox.ErrInvalidMessage, name)
			require.NoError(t, tx.Commit())
		}
		require.Zero(t, e.count(t, "", ""), "nothing is written")
		odd := msg("a", 3)
		odd.Metadata.Set("", "empty key")
		odd.Metadata.Set("nul", "v\x00w")
		e.write(t, "t", odd)
		require.Equal(t, 1, e.count(t, "", ""), "an empty metadata key and NUL in a value are stored")
	})
}

// TestWritersOneKeyCommitOrder: the second writer of a key waits for the
// first one's commit, so id order is commit order.
func TestWritersOneKeyCommitOrder(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var mu sync.Mutex
		var commits []string
		a := msg("k", 1)
		txA, err := e.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, e.ob.Write(ctx, txA, "t", a))
		bDone := make(chan error, 1)
		b := msg("k", 2)
		go func() {
			tx, err := e.db.BeginTx(ctx, nil)
			if err == nil {
				if err = e.ob.Write(ctx, tx, "t", b); err == nil {
					err = tx.Commit()
				}
			}
			mu.Lock()
			commits = append(commits, b.UUID)
			mu.Unlock()
			bDone <- err
		}()
		time.Sleep(300 * time.Millisecond) // give B the time to get ahead if nothing stops it
		mu.Lock()
		commits = append(commits, a.UUID)
		mu.Unlock()
		require.NoError(t, txA.Commit())
		require.NoError(t, <-bDone)

		rows, err := e.db.QueryContext(ctx, "SELECT uuid FROM "+quote(d, e.ob.Table())+" ORDER BY id")
		require.NoError(t, err)
		defer func() { _ = rows.Close() }()
		var ids []string
		for rows.Next() {
			var u string
			require.NoError(t, rows.Scan(&u))
			ids = append(ids, u)
		}
		require.Equal(t, commits, ids, "id order is the commit order")
	})
}

// TestLateLowerIDPublished: a row with a lower id committing after a
// higher one is still published (no cursor skips it).
func TestLateLowerIDPublished(t *testing.T) {
	t.Parallel()
	for _, d := range []sqlstore.Dialect{sqlstore.Postgres, sqlstore.MySQL} { // SQLite has one writer at a time
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, d, nil)
			ctx := context.Background()
			rec := &recorder{}
			_, stop := runRelay(t, e.ob, fast(rec))
			defer stop()
			late := msg("x", 1)
			txLate, err := e.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, e.ob.Write(ctx, txLate, "t", late))
			early := msg("y", 1)
			e.write(t, "t", early)
			waitFor(t, 20*time.Second, "the higher id published", func() bool { return len(rec.snapshot()) == 1 })
			require.NoError(t, txLate.Commit())
			waitFor(t, 20*time.Second, "the lower id published", func() bool { return len(rec.snapshot()) == 2 })
			got := rec.snapshot()
			require.Equal(t, []string{early.UUID, late.UUID}, []string{got[0].uuid, got[1].uuid})
			waitFor(t, 20*time.Second, "both rows marked", func() bool { return e.count(t, "", "") == 0 })
		})
	}
}

// TestRelaysInParallel: three relays share the buckets; every row is
// published once, per key in order.
func TestRelaysInParallel(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, func(o *outbox.Options) { o.Buckets = 16 })
		rec := &recorder{}
		var relays []*outbox.Relay
		for range 3 {
			cfg := fast(rec)
			cfg.BatchSize = 16
			// Long enough that no lease runs out on a loaded machine: a
			// lost lease is the abnormal case, where duplicates are allowed.
			cfg.Lease = 4 * time.Second
			r, stop := runRelay(t, e.ob, cfg)
			defer stop()
			relays = append(relays, r)
		}
		waitFor(t, 30*time.Second, "the buckets shared by the three relays", func() bool {
			var owners int
			q := "SELECT COUNT(DISTINCT owner) FROM " + quote(d, e.ob.Table()+"_leases") + " WHERE bucket >= 0 AND owner <> ''"
			require.NoError(t, e.db.QueryRow(q).Scan(&owners))
			return owners == 3
		})
		const keys, perKey, writers = 12, 30, 4
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for s := range perKey {
					var ms []*message.Message
					for k := w; k < keys; k += writers {
						ms = append(ms, msg(fmtKey(k), s))
					}
					e.write(t, "t", ms...)
				}
			})
		}
		wg.Wait()
		waitFor(t, 60*time.Second, "every row published", func() bool { return e.count(t, "", "") == 0 })
		got := rec.snapshot()
		require.Len(t, got, keys*perKey, "each row published once")
		seen := map[string]bool{}
		for _, p := range got {
			require.False(t, seen[p.uuid], "published twice: %s", p.uuid)
			seen[p.uuid] = true
		}
		checkKeyOrder(t, got)
		waitFor(t, 10*time.Second, "the relays' counters", func() bool {
			var total int64
			for _, r := range relays {
				total += r.Stats().Published
			}
			return total == keys*perKey
		})
	})
}

// TestFencing: a relay whose lease was taken while it published marks
// nothing.
func TestFencing(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, func(o *outbox.Options) { o.Buckets = 4 })
		e.write(t, "t", msg("a", 1), msg("b", 1), msg("c", 1))
		stolen := make(chan error, 1)
		rec := &recorder{after: func() {
			// Another relay takes every bucket between publish and mark.
			_, err := e.db.Exec("UPDATE " + quote(d, e.ob.Table()+"_leases") + " SET owner = 'thief', token = 7, lease_until = " +
				hourLater(d, "lease_until") + " WHERE bucket >= 0")
			stolen <- err
		}}
		r, stop := runRelay(t, e.ob, fast(rec))
		select {
		case err := <-stolen:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("nothing published in 20s")
		}
		time.Sleep(300 * time.Millisecond)
		stop()
		require.Zero(t, r.Stats().Published, "no row marked")
		require.Equal(t, 3, e.count(t, "", ""), "the rows stay for the lease's new owner")
	})
}

// TestRelayRegistersAgain: a relay whose registration row was removed
// (as after a stall longer than its lease) registers again.
func TestRelayRegistersAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sqlstore.SQLite, nil)
	rec := &recorder{}
	_, stop := runRelay(t, e.ob, fast(rec))
	defer stop()
	waitFor(t, 20*time.Second, "registered", func() bool { return e.count(t, "_leases", "bucket < 0") == 1 })
	_, err := e.db.Exec("DELETE FROM " + quote(e.d, e.ob.Table()+"_leases") + " WHERE bucket < 0")
	require.NoError(t, err)
	waitFor(t, 20*time.Second, "registered again", func() bool { return e.count(t, "_leases", "bucket < 0") == 1 })
	e.write(t, "t", msg("a", 1))
	waitFor(t, 20*time.Second, "published", func() bool { return rec.unique() == 1 })
	stop()
	require.Zero(t, e.count(t, "_leases", "bucket < 0"), "Run removes its row when it returns")
	require.Zero(t, e.count(t, "_leases", "owner <> ''"), "and gives its buckets back")
}
