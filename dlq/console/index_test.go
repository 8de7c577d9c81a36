package console

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	dedupsql "github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// indexes returns a fresh index of each kind, each with tables of its own.
func indexes() map[string]func(t testing.TB) Index {
	sqlIndex := func(d dedupsql.Dialect) func(t testing.TB) Index {
		return func(t testing.TB) Index {
			t.Helper()
			var (
				db  *sql.DB
				err error
			)
			switch d {
			case dedupsql.Postgres:
				db, err = sql.Open("pgx", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
			case dedupsql.MySQL:
				db, err = sql.Open("mysql", "root@tcp(127.0.0.1:3306)/test")
			default:
				db, err = dedupsql.OpenSQLite(filepath.Join(t.TempDir(), "index.db"))
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, db.PingContext(ctx), "%s is required for this test", d)
			b := make([]byte, 4)
			_, _ = rand.Read(b)
			prefix := "console_test_" + hex.EncodeToString(b)
			x, err := NewSQLIndex(ctx, db, &SQLIndexOptions{TablePrefix: prefix})
			require.NoError(t, err)
			// A second migration (another process starting) is harmless.
			_, err = NewSQLIndex(ctx, db, &SQLIndexOptions{TablePrefix: prefix})
			require.NoError(t, err)
			t.Cleanup(func() {
				for _, tb := range []string{"_entries", "_ends", "_groups", "_jobs"} {
					_, _ = db.ExecContext(context.Background(), "DROP TABLE "+prefix+tb)
				}
			})
			return x
		}
	}
	return map[string]func(t testing.TB) Index{
		"redis":    func(t testing.TB) Index { x, _ := redisIndexes(t, 1); return x[0] },
		"memory":   func(testing.TB) Index { return NewMemoryIndex() },
		"sqlite":   sqlIndex(dedupsql.SQLite),
		"postgres": sqlIndex(dedupsql.Postgres),
		"mysql":    sqlIndex(dedupsql.MySQL),
	}
}

// redisIndexes returns n Redis indexes on one fresh prefix (consoles
// sharing the index, or one restarted), deleted when the test ends.
func redisIndexes(t testing.TB, n int) ([]Index, *redis.Client) {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, client.Ping(ctx).Err(), "Redis is required at 127.0.0.1:6379 for this test")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	prefix := "idempo:console_test_" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			_ = client.Unlink(ctx, iter.Val()).Err()
		}
		_ = client.Close()
	})
	out := make([]Index, n)
	for i := range out {
		x, err := NewRedisIndex(client, &RedisIndexOptions{Prefix: prefix})
		require.NoError(t, err)
		out[i] = x
	}
	return out, client
}

// Two Redis indexes on one prefix (two consoles, or a console and its
// restart) see each other's entries, ends and marks.
func TestRedisIndexShared(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	xs, _ := redisIndexes(t, 2)
	b := setup(t, func(c *Config) { c.Index = xs[0] })
	b.refresh(t)
	st, err := xs[1].state(ctx, testDLQ)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"0": 5}, st.ends)
	require.Len(t, st.digests, 6)
	require.Equal(t, int64(6), st.seq)
	r, ok, err := xs[1].get(ctx, testDLQ, "p2")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "evt-p2", r.EventID)
	require.Equal(t, t0.Add(time.Minute), r.At)

	// A restarted console on the same index adds only what is new.
	b2 := setup(t, func(c *Config) { c.Index = xs[1]; c.Source = b.src })
	b.src.deadLetter(testDLQ, "n1", "evt-n1", "permanent_error", "charge", "x", t0, "{}")
	b2.refresh(t)
	st, err = xs[0].state(ctx, testDLQ)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"0": 6}, st.ends)
	require.Len(t, st.digests, 7)
	rows, total, err := xs[0].list(ctx, query{DLQ: testDLQ, Limit: 100})
	require.NoError(t, err)
	require.Equal(t, 7, total)
	require.Equal(t, "n1", rows[0].ID, "newest first")

	// Marks set through one are seen by the other, and cleared.
	require.NoError(t, xs[1].setMarks(ctx, testDLQ, map[string]mark{"p1": {Resolution: "replayed", By: "bob"}, "nope": {Resolution: "purged", By: "x"}}))
	mk, err := xs[0].marks(ctx, testDLQ)
	require.NoError(t, err)
	require.Equal(t, map[string]mark{"p1": {Resolution: "replayed", By: "bob"}}, mk, "an unknown entry gets no mark")
	require.NoError(t, xs[0].setMarks(ctx, testDLQ, map[string]mark{"p1": {}}))
	mk, err = xs[1].marks(ctx, testDLQ)
	require.NoError(t, err)
	require.Empty(t, mk)
	require.NoError(t, xs[0].saveJob(ctx, "j1", []byte(`{"ID":"j1"}`)))
	js, err := xs[1].jobs(ctx)
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte(`{"ID":"j1"}`)}, js)
}

func TestNewRedisIndexNil(t *testing.T) {
	t.Parallel()
	_, err := NewRedisIndex(nil, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
}

// TestIndex runs the same cases on every index: tailing, groups, filters,
// paging, resolution marks, the entry-ID rule.
func TestIndex(t *testing.T) {
	t.Parallel()
	for name, open := range indexes() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			x := open(t)
			b := setup(t, func(c *Config) { c.Index = x; c.PageSize = 2 })
			b.refresh(t)

			gs, err := x.groups(ctx, testDLQ, []time.Time{t0.Add(time.Minute), t0.Add(time.Hour)})
			require.NoError(t, err)
			require.Len(t, gs, 3, "payment, stock and the foreign copy: %+v", gs)
			require.Equal(t, 3, gs[0].Count)
			require.Equal(t, "permanent_error", gs[0].Reason)
			require.Equal(t, "charge", gs[0].Handler)
			require.Equal(t, "charge for order <n> declined: card <q>", gs[0].Key)
			require.Equal(t, `charge for order 1000 declined: card "4242-p1"`, gs[0].Sample, "the first entry's error")
			require.Equal(t, t0, gs[0].First)
			require.Equal(t, t0.Add(2*time.Minute), gs[0].Last)
			require.Equal(t, []int{2, 0}, gs[0].Recent, "p2 and p3 failed at or after 03:01")
			require.Equal(t, 2, gs[1].Count)
			require.Equal(t, []int{2, 2}, gs[1].Recent)
			require.Equal(t, "dial tcp <addr>: connection refused", gs[1].Key)
			require.Equal(t, 1, gs[2].Count)

			n, err := x.hourly(ctx, testDLQ, t0.Add(-24*time.Hour))
			require.NoError(t, err)
			require.Equal(t, map[int64]int{hourOf(t0): 3, hourOf(t0) + 1: 2}, n, "p1–p3 in 03:00–04:00, s1 and s2 in 04:00–05:00")
			n, err = x.hourly(ctx, testDLQ, t0.Add(time.Hour))
			require.NoError(t, err)
			require.Equal(t, map[int64]int{hourOf(t0) + 1: 2}, n)
			n, err = x.hourly(ctx, "no.such.dlq", t0)
			require.NoError(t, err)
			require.Empty(t, n)

			list := func(q query) ([]string, int) {
				t.Helper()
				q.DLQ = testDLQ
				if q.Limit == 0 {
					q.Limit = 100
				}
				rows, total, err := x.list(ctx, q)
				require.NoError(t, err)
				var ids []string
				for _, r := range rows {
					ids = append(ids, r.ID)
				}
				return ids, total
			}
			ids, total := list(query{})
			require.Equal(t, 6, total)
			require.Equal(t, []string{"foreign-1", "s2", "s1", "p3", "p2", "p1"}, ids, "newest first")
			ids, total = list(query{Limit: 2, Offset: 2})
			require.Equal(t, []string{"s1", "p3"}, ids)
			require.Equal(t, 6, total)
			ids, _ = list(query{Search: "evt-p2"})
			require.Equal(t, []string{"p2"}, ids, "by event ID")
			ids, _ = list(query{Search: "s1"})
			require.Equal(t, []string{"s1"}, ids, "by entry ID")
			ids, _ = list(query{Search: "CONNECTION refused"})
			require.Equal(t, []string{"s2", "s1"}, ids, "by text, any case")
			ids, _ = list(query{Search: "100%"})
			require.Empty(t, ids, "LIKE wildcards are literal")
			ids, _ = list(query{Reason: "retries_exhausted"})
			require.Equal(t, []string{"s2", "s1"}, ids)
			ids, _ = list(query{Handler: "charge", Since: t0.Add(time.Minute), Until: t0.Add(2 * time.Minute)})
			require.Equal(t, []string{"p2"}, ids, "since is inclusive, until exclusive")
			ids, _ = list(query{Group: gs[0].ID})
			require.Equal(t, []string{"p3", "p2", "p1"}, ids)

			r, ok, err := x.get(ctx, testDLQ, "foreign-1")
			require.NoError(t, err)
			require.True(t, ok)
			require.Contains(t, r.Problems, "not written by idempo")
			_, ok, err = x.get(ctx, testDLQ, "nope")
			require.NoError(t, err)
			require.False(t, ok)

			// Resolutions reach the index: p1 replayed by bob, p2 held.
			begun, err := b.res.Begin(ctx, resolution.Key{DLQ: testDLQ, EntryID: "p1"}, "bob", time.Minute)
			require.NoError(t, err)
			_, err = b.res.Finish(ctx, resolution.Key{DLQ: testDLQ, EntryID: "p1"}, begun.Token, resolution.Replayed)
			require.NoError(t, err)
			held, err := b.res.Begin(ctx, resolution.Key{DLQ: testDLQ, EntryID: "p2"}, "carol", time.Minute)
			require.NoError(t, err)
			// New copies: one new entry, one repeat of p3 (same payload: the
			// same entry), one copy sharing p3's ID with another payload.
			b.src.deadLetter(testDLQ, "n1", "evt-n1", "permanent_error", "charge", `charge for order 77 declined: card "9"`, t0.Add(3*time.Hour), "{}")
			b.src.deadLetter(testDLQ, "p3", "evt-p3", "permanent_error", "charge", `charge for order 1002 declined: card "4242-p3"`, t0.Add(2*time.Minute), `{"order":1002}`)
			b.src.deadLetter(testDLQ, "p3", "evt-p3", "permanent_error", "charge", `charge for order 1002 declined: card "4242-p3"`, t0.Add(2*time.Minute), `{"order":"other"}`)
			b.refresh(t)
			gs, err = x.groups(ctx, testDLQ, nil)
			require.NoError(t, err)
			require.Equal(t, 4, gs[0].Count, "p1 resolved; p2 held (still unresolved); p3, n1 and p3's namesake: %+v", gs[0])
			ids, total = list(query{Group: gs[0].ID})
			require.Equal(t, 4, total)
			require.Contains(t, ids, "n1")
			require.NotContains(t, ids, "p1")
			ids, total = list(query{All: true})
			require.Equal(t, 8, total, "every entry once: %v", ids)
			r, _, err = x.get(ctx, testDLQ, "p1")
			require.NoError(t, err)
			require.Equal(t, mark{"replayed", "bob"}, r.mark)
			r, _, err = x.get(ctx, testDLQ, "p2")
			require.NoError(t, err)
			require.Equal(t, mark{inProgress, "carol"}, r.mark)

			// An abort gives p2 back: its mark goes.
			require.NoError(t, b.res.Abort(ctx, resolution.Key{DLQ: testDLQ, EntryID: "p2"}, held.Token))
			b.refresh(t)
			r, _, err = x.get(ctx, testDLQ, "p2")
			require.NoError(t, err)
			require.Equal(t, mark{}, r.mark)
		})
	}
}

// A refresh resumes from where the last stopped: what it indexed is not
// read into the index again, even by another console on the same tables.
func TestIndexResumes(t *testing.T) {
	t.Parallel()
	x := indexes()["sqlite"](t)
	b := setup(t, func(c *Config) { c.Index = x })
	b.refresh(t)
	st, err := x.state(context.Background(), testDLQ)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"0": 5}, st.ends)
	require.Len(t, st.digests, 6)
	// A second console (a restart) on the same index adds only new entries.
	b2 := setup(t, func(c *Config) { c.Index = x; c.Source = b.src })
	b.src.deadLetter(testDLQ, "n1", "evt-n1", "permanent_error", "charge", "x", t0, "{}")
	// What sits at an indexed position is not read into the index again
	// (a DLQ is append-only: this stands for "not re-indexed").
	b.src.topics[testDLQ][0].Metadata.Set(dlqmeta.KeyEntryID, "rewritten")
	b2.refresh(t)
	st, err = x.state(context.Background(), testDLQ)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"0": 6}, st.ends)
	require.Len(t, st.digests, 7)
	require.Equal(t, int64(7), st.seq)
}

// tailingSource is a fakeSource with ReadAfter, counting the copies read.
type tailingSource struct {
	*fakeSource
	read int
}

func (s *tailingSource) ReadAfter(ctx context.Context, topic string, after map[string]int64, fn func(dlqops.Entry) error) error {
	return s.Read(ctx, topic, func(e dlqops.Entry) error {
		part, off, _ := splitPosition(e.Position)
		if end, ok := after[part]; ok && off <= end {
			return nil
		}
		s.read++
		return fn(e)
	})
}

// With a Tailer, a pass reads only what is new.
func TestRefreshTails(t *testing.T) {
	t.Parallel()
	src := &tailingSource{fakeSource: newFakeSource()}
	b := setup(t, func(c *Config) { c.Source = src })
	for _, m := range newFakeSourceLike(b) {
		src.add(testDLQ, m)
	}
	b.refresh(t)
	require.Equal(t, 6, src.read)
	b.refresh(t)
	require.Equal(t, 6, src.read, "nothing new, nothing read")
	src.deadLetter(testDLQ, "n1", "evt-n1", "permanent_error", "charge", "x", t0, "{}")
	b.refresh(t)
	require.Equal(t, 7, src.read)
	require.Equal(t, progress{Read: 7, Total: 7, Done: true, LastPass: t0.Add(2 * time.Hour)}, b.h.progress.get(testDLQ))
	require.Contains(t, b.get(t, "/").body, "orders.dlq</a>: 7 unresolved")
}

// newFakeSourceLike returns the copies setup put in its own source.
func newFakeSourceLike(b *bundle) []*message.Message { return b.src.topics[testDLQ] }
