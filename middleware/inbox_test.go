package middleware_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

// Transactional inbox through the stack: 8 concurrent consumers (two
// stacks, as two processes), every event delivered several times, handlers
// failing at random after their business write. Each event's business row
// must exist exactly once, at every isolation level the inbox supports.
func TestInboxExactlyOnceWithConcurrentTwins(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			db := env.open(t)
			suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
			table, effects := "inbox_dedup_"+suffix, "inbox_effects_"+suffix
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table, InboxTxOptions: env.txOpts})
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
			policy := fastRetry()
			if env.serializable {
				// PostgreSQL's SERIALIZABLE aborts some transactions of
				// different events that touch the same index pages; the
				// stack retries them like a handler error.
				policy.MaxAttempts = 20
			}
			var stacks []*middleware.Stack
			dead := newCapture()
			for range 2 {
				s, err := middleware.New(middleware.Config{
					Store: st, DLQ: dlq.Config{Publisher: dead}, Transactional: true, Scope: "inbox",
					Retry: policy, NackDelay: time.Millisecond, Logger: quiet,
				})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				stacks = append(stacks, s)
			}
			const events, copies = 60, 4
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			deadline := time.Now().Add(3 * time.Minute)
			for w := range 8 {
				wg.Go(func() {
					h := stacks[w%2].Middleware(handler)
					for i := range events * copies {
						id := fmt.Sprintf("ev-%d", (i+w*7)%events)
						for {
							if time.Now().After(deadline) {
								errs <- fmt.Errorf("worker %d: %s not settled within 3 minutes", w, id)
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

// inboxEnv is a database and isolation level the inbox tests run in.
type inboxEnv struct {
	name    string
	dialect sqlstore.Dialect
	dsn     string // "" for a new SQLite file opened with OpenSQLite
	txOpts  *sql.TxOptions
	// serializable: PostgreSQL's SERIALIZABLE, which aborts some
	// transactions that conflict only through index pages.
	serializable bool
}

const (
	inboxPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	inboxMySQLDSN    = "root@tcp(127.0.0.1:3306)/test?parseTime=true"
)

// inboxEnvs: PostgreSQL at READ COMMITTED, REPEATABLE READ and SERIALIZABLE,
// asked through InboxTxOptions or as the session default; MariaDB with
// innodb_snapshot_isolation off and on; SQLite.
func inboxEnvs() []inboxEnv {
	rr, ser := &sql.TxOptions{Isolation: sql.LevelRepeatableRead}, &sql.TxOptions{Isolation: sql.LevelSerializable}
	return []inboxEnv{
		{name: "sqlite", dialect: sqlstore.SQLite},
		{name: "postgres", dialect: sqlstore.Postgres, dsn: inboxPostgresDSN},
		{name: "postgres/repeatable-read-option", dialect: sqlstore.Postgres, dsn: inboxPostgresDSN, txOpts: rr},
		{name: "postgres/serializable-option", dialect: sqlstore.Postgres, dsn: inboxPostgresDSN, txOpts: ser, serializable: true},
		{name: "postgres/repeatable-read-default", dialect: sqlstore.Postgres, dsn: inboxPostgresDSN + "&default_transaction_isolation=repeatable%20read"},
		{name: "postgres/serializable-default", dialect: sqlstore.Postgres, dsn: inboxPostgresDSN + "&default_transaction_isolation=serializable", serializable: true},
		{name: "mysql", dialect: sqlstore.MySQL, dsn: inboxMySQLDSN},
		{name: "mysql/snapshot-isolation", dialect: sqlstore.MySQL, dsn: inboxMySQLDSN + "&innodb_snapshot_isolation=ON"},
		{name: "mysql/snapshot-isolation-repeatable-read-option", dialect: sqlstore.MySQL, dsn: inboxMySQLDSN + "&innodb_snapshot_isolation=ON", txOpts: rr},
	}
}

// open opens env's database and closes it at the end of the test.
func (env inboxEnv) open(t *testing.T) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	switch env.dialect {
	case sqlstore.SQLite:
		db, err = sqlstore.OpenSQLite(filepath.Join(t.TempDir(), "inbox.db"))
		require.NoError(t, err)
	case sqlstore.Postgres:
		db, err = sql.Open("pgx", env.dsn)
		require.NoError(t, err)
		require.NoError(t, db.Ping(), "PostgreSQL must run on 127.0.0.1:5432 (make services)")
	default:
		db, err = sql.Open("mysql", env.dsn)
		require.NoError(t, err)
		require.NoError(t, db.Ping(), "MariaDB must run on 127.0.0.1:3306 (make services)")
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// On SQLite opened with OpenSQLite (one connection, held by the inbox
// transaction while the handler runs) a handler longer than two leases is
// processed once: its lease is kept, it is not cancelled as a lost lease.
func TestInboxSQLiteHandlerOutlivesLeases(t *testing.T) {
	t.Parallel()
	db := inboxEnv{dialect: sqlstore.SQLite}.open(t)
	st, err := sqlstore.New(db, &sqlstore.Options{Table: "inbox_dedup", Logger: quiet})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, st.Migrate(ctx))
	_, err = db.ExecContext(ctx, "CREATE TABLE effects (event_id TEXT NOT NULL)")
	require.NoError(t, err)
	const lease = time.Second
	dead := newCapture()
	s, err := middleware.New(middleware.Config{
		Store: st, DLQ: dlq.Config{Publisher: dead}, Transactional: true, Scope: "inbox", Lease: lease,
		Retry: fastRetry(), NackDelay: time.Millisecond, Logger: quiet,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	var calls atomic.Int32
	h := s.Middleware(func(m *message.Message) ([]*message.Message, error) {
		calls.Add(1)
		tx, _ := sqlstore.TxFromContext(m.Context())
		if _, err := tx.ExecContext(m.Context(), "INSERT INTO effects (event_id) VALUES (?)", m.UUID); err != nil {
			return nil, err
		}
		select {
		case <-time.After(2*lease + lease/2):
			return nil, nil
		case <-m.Context().Done():
			return nil, context.Cause(m.Context())
		}
	})
	m := message.NewMessage("long", nil)
	m.SetContext(ctx)
	_, err = h(m)
	require.NoError(t, err)
	require.EqualValues(t, 1, calls.Load())
	stats := s.Stats()
	require.EqualValues(t, 1, stats.Processed)
	require.Zero(t, stats.LeaseLost)
	require.Zero(t, dead.count())
	var n int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM effects").Scan(&n))
	require.Equal(t, 1, n)
}

// takeoverStore runs before once, just before the first CompleteInTx.
type takeoverStore struct {
	*sqlstore.Store
	once   sync.Once
	before func(key dedup.Key)
}

func (s *takeoverStore) CompleteInTx(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration, fn func(context.Context) error) error {
	s.once.Do(func() { s.before(key) })
	return s.Store.CompleteInTx(ctx, key, token, retention, fn)
}

// The inbox finds its token no longer holding the record (the lease ran
// out and another stack took the event over and processed it): the first
// owner's business write is absent, its outcome is a lost lease (not
// processed), and the effect exists exactly once.
func TestInboxLeaseLostAtCompletion(t *testing.T) {
	t.Parallel()
	for _, env := range inboxEnvs() {
		if env.txOpts != nil || strings.Contains(env.dsn, "isolation") {
			continue // the plain set-up of each dialect
		}
		t.Run(env.name, func(t *testing.T) {
			t.Parallel()
			db := env.open(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
			table, effects := "inbox_dedup_"+suffix, "inbox_effects_"+suffix
			st, err := sqlstore.New(db, &sqlstore.Options{Table: table, Logger: quiet})
			require.NoError(t, err)
			require.NoError(t, st.Migrate(ctx))
			_, err = db.ExecContext(ctx, "CREATE TABLE "+effects+" (event_id VARCHAR(64) NOT NULL, worker VARCHAR(8) NOT NULL)")
			require.NoError(t, err)
			t.Cleanup(func() {
				_, _ = db.ExecContext(context.Background(), "DROP TABLE "+effects)
				_, _ = db.ExecContext(context.Background(), "DROP TABLE "+table)
			})
			insert, expire := "INSERT INTO "+effects+" (event_id, worker) VALUES (?, ?)", ""
			switch env.dialect {
			case sqlstore.Postgres:
				insert = "INSERT INTO " + effects + " (event_id, worker) VALUES ($1, $2)"
				expire = "UPDATE " + table + " SET lease_until = clock_timestamp() - interval '1 hour'"
			case sqlstore.MySQL:
				expire = "UPDATE " + table + " SET lease_until = UTC_TIMESTAMP(6) - INTERVAL 1 HOUR"
			default:
				expire = "UPDATE " + table + " SET lease_until = 0"
			}
			var calls sync.Map // worker → *atomic.Int32
			handler := func(worker string) message.HandlerFunc {
				return func(m *message.Message) ([]*message.Message, error) {
					n, _ := calls.LoadOrStore(worker, new(atomic.Int32))
					n.(*atomic.Int32).Add(1)
					tx, _ := sqlstore.TxFromContext(m.Context())
					_, err := tx.ExecContext(m.Context(), insert, m.UUID, worker)
					return nil, err
				}
			}
			var events sync.Mutex
			var seenA []middleware.Event
			newStack := func(store dedup.Store, obs middleware.Observer) *middleware.Stack {
				s, err := middleware.New(middleware.Config{
					Store: store, DLQ: dlq.Config{Publisher: newCapture()}, Transactional: true, Scope: "inbox",
					Lease: time.Minute, Retry: fastRetry(), NackDelay: time.Millisecond, Logger: quiet, Observer: obs,
				})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			b := newStack(st, nil)
			var bErr error
			ts := &takeoverStore{Store: st, before: func(dedup.Key) {
				// The first owner's lease runs out; the second stack takes
				// the event over and processes it.
				if _, err := db.ExecContext(ctx, expire); err != nil {
					bErr = err
					return
				}
				m := message.NewMessage("ev", nil)
				m.SetContext(ctx)
				_, bErr = b.Middleware(handler("B"))(m)
			}}
			a := newStack(ts, middleware.ObserverFunc(func(_ context.Context, e middleware.Event) {
				events.Lock()
				seenA = append(seenA, e)
				events.Unlock()
			}))
			m := message.NewMessage("ev", nil)
			m.SetContext(ctx)
			_, err = a.Middleware(handler("A"))(m)
			require.NoError(t, bErr, "the second stack processed the event")
			require.ErrorIs(t, err, dedup.ErrLeaseLost)

			statsA := a.Stats()
			require.EqualValues(t, 1, statsA.LeaseLost)
			require.Zero(t, statsA.Processed)
			require.EqualValues(t, 1, b.Stats().Processed)
			events.Lock()
			lost := false
			for _, e := range seenA {
				lost = lost || e.Kind == middleware.KindLeaseLost
				require.False(t, e.Kind == middleware.KindOutcome && e.Outcome == middleware.OutcomeProcessed, "the first owner reported the event processed")
			}
			events.Unlock()
			require.True(t, lost, "the first owner reported a lost lease")

			// The redelivery to the first owner is a duplicate.
			m = message.NewMessage("ev", nil)
			m.SetContext(ctx)
			_, err = a.Middleware(handler("A"))(m)
			require.NoError(t, err)
			require.EqualValues(t, 1, a.Stats().Duplicates)

			rows, err := db.QueryContext(ctx, "SELECT worker FROM "+effects+" WHERE event_id = 'ev'")
			require.NoError(t, err)
			defer rows.Close()
			var workers []string
			for rows.Next() {
				var w string
				require.NoError(t, rows.Scan(&w))
				workers = append(workers, w)
			}
			require.NoError(t, rows.Err())
			require.Equal(t, []string{"B"}, workers, "the effect exists once, the new owner's; the first owner's write is absent")
		})
	}
}
