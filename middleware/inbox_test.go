package middleware_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/middleware"
)

// Transactional inbox through the stack: 8 concurrent consumers (two
// stacks, as two processes), every event delivered several times, handlers
// failing at random after their business write. Each event's business row
// must exist exactly once.
func TestInboxExactlyOnceWithConcurrentTwins(t *testing.T) {
	t.Parallel()
	dbs := map[string]func(t *testing.T) *sql.DB{
		"sqlite": func(t *testing.T) *sql.DB {
			db, err := sqlstore.OpenSQLite(filepath.Join(t.TempDir(), "inbox.db"))
			require.NoError(t, err)
			return db
		},
		"postgres": func(t *testing.T) *sql.DB {
			db, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
			require.NoError(t, err)
			require.NoError(t, db.Ping(), "PostgreSQL must run on 127.0.0.1:5432 (make services)")
			return db
		},
	}
	for name, open := range dbs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := open(t)
			t.Cleanup(func() { _ = db.Close() })
			suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
			table, effects := "inbox_dedup_"+suffix, "inbox_effects_"+suffix
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table})
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, st.Migrate(ctx))
			_, err = db.ExecContext(ctx, "CREATE TABLE "+effects+" (event_id VARCHAR(64) NOT NULL)")
			require.NoError(t, err)
			t.Cleanup(func() {
				_, _ = db.ExecContext(context.Background(), "DROP TABLE "+effects)
				_, _ = db.ExecContext(context.Background(), "DROP TABLE "+table)
			})
			insert := "INSERT INTO " + effects + " (event_id) VALUES (?)"
			if st.Dialect() == sqlstore.Postgres {
				insert = "INSERT INTO " + effects + " (event_id) VALUES ($1)"
			}
			var attempts sync.Map // event ID → *atomic.Int32
			handler := func(m *message.Message) ([]*message.Message, error) {
				tx, ok := sqlstore.TxFromContext(m.Context())
				if !ok {
					return nil, errors.New("no transaction in the handler's context")
				}
				if _, err := tx.ExecContext(m.Context(), insert, m.UUID); err != nil {
					return nil, err
				}
				n, _ := attempts.LoadOrStore(m.UUID, new(atomic.Int32))
				if n.(*atomic.Int32).Add(1) == 1 { // each event's first attempt fails after its write: it must roll back
					return nil, errors.New("transient failure after the business write")
				}
				return nil, nil
			}
			var stacks []*middleware.Stack
			dead := newCapture()
			for range 2 {
				s, err := middleware.New(middleware.Config{
					Store: st, DLQPublisher: dead, Transactional: true, Scope: "inbox",
					Retry: fastRetry(), NackDelay: time.Millisecond, Logger: quiet,
				})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				stacks = append(stacks, s)
			}
			const events, copies = 60, 4
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Go(func() {
					h := stacks[w%2].Middleware(handler)
					for i := range events * copies {
						id := fmt.Sprintf("ev-%d", (i+w*7)%events)
						for {
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
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			rows, err := db.QueryContext(ctx, "SELECT event_id, COUNT(*) FROM "+effects+" GROUP BY event_id")
			require.NoError(t, err)
			defer rows.Close()
			seen := 0
			for rows.Next() {
				var id string
				var n int
				require.NoError(t, rows.Scan(&id, &n))
				require.Equal(t, 1, n, "event %s written %d times", id, n)
				seen++
			}
			require.NoError(t, rows.Err())
			require.Zero(t, dead.count(), "nothing was dead-lettered")
			require.Equal(t, events, seen, "every event's effect exists")
			total := stacks[0].Stats().Processed + stacks[1].Stats().Processed
			require.EqualValues(t, events, total)
		})
	}
}
