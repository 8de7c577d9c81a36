package middleware_test

import (
	"context"
	"database/sql"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

// twinStores opens one store per backend the no-twin test runs on, each
// isolated (own key prefix or table) and removed at the end.
func twinStores() map[string]func(t *testing.T) dedup.Store {
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	return map[string]func(t *testing.T) dedup.Store{
		"memory": func(*testing.T) dedup.Store { return memstore.New(nil) },
		"redis": func(t *testing.T) dedup.Store {
			client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
			t.Cleanup(func() { _ = client.Close() })
			require.NoError(t, client.Ping(context.Background()).Err(), "Redis must run on 127.0.0.1:6379 (make services)")
			st, err := redisstore.New(client, &redisstore.Options{Prefix: "twins-" + suffix + ":"})
			require.NoError(t, err)
			return st
		},
		"postgres": func(t *testing.T) dedup.Store {
			db, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			require.NoError(t, db.Ping(), "PostgreSQL must run on 127.0.0.1:5432 (make services)")
			table := "twins_" + suffix
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table})
			require.NoError(t, err)
			require.NoError(t, st.Migrate(context.Background()))
			t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP TABLE "+table) })
			return st
		},
	}
}

// No concurrent twin at the shortest lease New accepts: two stacks (two
// processes) on one store, a handler that honours its context and would run
// 2.5 leases, and twins of each event delivered to the second stack after
// the first lease term. 50 events at once per store: the handler of an event
// never runs twice at the same time.
func TestNoConcurrentTwinAtMinLease(t *testing.T) {
	t.Parallel()
	for name, open := range twinStores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st := open(t)
			newStack := func() *middleware.Stack {
				s, err := middleware.New(middleware.Config{
					Store: st, DLQ: dlq.Config{Publisher: newCapture()}, Lease: middleware.MinLease,
					NackDelay: 50 * time.Millisecond, Logger: quiet, Retention: time.Hour,
				})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			first, second := newStack(), newStack()

			const trials = 50
			var running [trials]atomic.Int32
			var overlaps, runs atomic.Int32
			handler := func(i int) message.HandlerFunc {
				return func(m *message.Message) ([]*message.Message, error) {
					if running[i].Add(1) > 1 {
						overlaps.Add(1)
					}
					defer running[i].Add(-1)
					runs.Add(1)
					select {
					case <-m.Context().Done():
						return nil, m.Context().Err()
					case <-time.After(middleware.MinLease * 5 / 2):
						return nil, nil
					}
				}
			}
			prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
			var wg sync.WaitGroup
			for i := range trials {
				id := prefix + strconv.Itoa(i)
				wg.Add(2)
				go func() {
					defer wg.Done()
					_, _ = first.Middleware(handler(i))(msg(id, "p"))
				}()
				go func() {
					defer wg.Done()
					// Twins after the first lease term, while the first runs.
					for _, at := range []time.Duration{1200 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond} {
						time.Sleep(at)
						_, _ = second.Middleware(handler(i))(msg(id, "p"))
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("the trials did not finish within 2 minutes")
			}
			require.Zero(t, overlaps.Load(), "a twin ran while the first delivery's handler still ran (%d runs)", runs.Load())
			require.GreaterOrEqual(t, runs.Load(), int32(trials))
		})
	}
}
