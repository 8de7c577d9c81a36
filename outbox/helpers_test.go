package outbox_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// Servers the tests run against; CI starts them. Override with these
// environment variables.
const (
	postgresDSNEnv = "IDEMPO_TEST_POSTGRES_DSN"
	mysqlDSNEnv    = "IDEMPO_TEST_MYSQL_DSN"

	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test?parseTime=true"
)

var dialects = []sqlstore.Dialect{sqlstore.Postgres, sqlstore.MySQL, sqlstore.SQLite}

func dsnFor(tb testing.TB, d sqlstore.Dialect) string {
	switch d {
	case sqlstore.Postgres:
		if v := os.Getenv(postgresDSNEnv); v != "" {
			return v
		}
		return defaultPostgresDSN
	case sqlstore.MySQL:
		if v := os.Getenv(mysqlDSNEnv); v != "" {
			return v
		}
		return defaultMySQLDSN
	default:
		return filepath.Join(tb.TempDir(), "outbox.db")
	}
}

// openDSN opens a database of dialect d (the tests and the child relay
// process share it).
func openDSN(ctx context.Context, d sqlstore.Dialect, dsn string, maxConns int) (*sql.DB, error) {
	var db *sql.DB
	var err error
	switch d {
	case sqlstore.Postgres:
		db, err = sql.Open("pgx", dsn)
	case sqlstore.MySQL:
		db, err = sql.Open("mysql", dsn)
	default:
		return sqlstore.OpenSQLite(dsn)
	}
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// env is one test's outbox on its own random table, dropped at the end.
type env struct {
	d   sqlstore.Dialect
	db  *sql.DB
	dsn string
	ob  *outbox.Outbox
}

func newEnv(tb testing.TB, d sqlstore.Dialect, opt func(*outbox.Options)) *env {
	tb.Helper()
	dsn := dsnFor(tb, d)
	db, err := openDSN(context.Background(), d, dsn, 16)
	if err != nil {
		tb.Fatalf("%s is unreachable: %v (start the server, or point %s/%s at one)", d, err, postgresDSNEnv, mysqlDSNEnv)
	}
	tb.Cleanup(func() { _ = db.Close() })
	o := &outbox.Options{Table: randomName("idempo_ob_")}
	if opt != nil {
		opt(o)
	}
	ob, err := outbox.New(db, o)
	require.NoError(tb, err)
	require.Equal(tb, d, ob.Dialect())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(tb, ob.Migrate(ctx))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []string{"", "_leases", "_dead", "_keys"} {
			_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+quote(d, ob.Table()+s))
		}
	})
	return &env{d: d, db: db, dsn: dsn, ob: ob}
}

func quote(d sqlstore.Dialect, name string) string {
	if d == sqlstore.MySQL {
		return "`" + name + "`"
	}
	return `"` + name + `"`
}

// count runs a COUNT(*) query on a table of the outbox (suffix "" is the
// outbox itself).
func (e *env) count(tb testing.TB, suffix, where string) int {
	tb.Helper()
	var n int
	q := "SELECT COUNT(*) FROM " + quote(e.d, e.ob.Table()+suffix)
	if where != "" {
		q += " WHERE " + where
	}
	require.NoError(tb, e.db.QueryRowContext(context.Background(), q).Scan(&n))
	return n
}

// msg builds a message of key with payload "key:seq".
func msg(key string, seq int) *message.Message {
	m := message.NewMessage(randomName("u-"), []byte(key+":"+strconv.Itoa(seq)))
	m.Metadata.Set(outbox.KeyMetadata, key)
	m.Metadata.Set("seq", strconv.Itoa(seq))
	return m
}

// write writes msgs in one committed transaction.
func (e *env) write(tb testing.TB, topic string, msgs ...*message.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := e.db.BeginTx(ctx, nil)
	require.NoError(tb, err)
	require.NoError(tb, e.ob.Write(ctx, tx, topic, msgs...))
	require.NoError(tb, tx.Commit())
}

// published is one message a recorder received.
type published struct {
	topic, uuid, key string
	seq              int
	md               message.Metadata
}

// recorder is an in-memory message.Publisher that records what it gets,
// failing when fail says so.
type recorder struct {
	mu    sync.Mutex
	got   []published
	fail  func(topic string, m *message.Message) error
	after func() // run once after the first successful Publish
	once  sync.Once
}

func (r *recorder) Publish(topic string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		if r.fail != nil {
			if err := r.fail(topic, m); err != nil {
				return err
			}
		}
		seq, _ := strconv.Atoi(m.Metadata.Get("seq"))
		r.got = append(r.got, published{topic: topic, uuid: m.UUID, key: m.Metadata.Get(outbox.KeyMetadata), seq: seq, md: m.Metadata})
	}
	if r.after != nil {
		r.once.Do(r.after)
	}
	return nil
}

func (r *recorder) Close() error { return nil }

// unique counts the distinct UUIDs received.
func (r *recorder) unique() int {
	seen := map[string]bool{}
	for _, p := range r.snapshot() {
		seen[p.uuid] = true
	}
	return len(seen)
}

func (r *recorder) snapshot() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.got...)
}

// runRelay runs a relay until the returned stop is called (or the test
// ends); stop waits for Run to return.
func runRelay(tb testing.TB, ob *outbox.Outbox, cfg outbox.RelayConfig) (*outbox.Relay, func()) {
	tb.Helper()
	r, err := outbox.NewRelay(ob, cfg)
	require.NoError(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(tb, err)
			case <-time.After(30 * time.Second):
				tb.Fatal("relay did not stop within 30s")
			}
		})
	}
	tb.Cleanup(stop)
	return r, stop
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkKeyOrder fails unless, per key and keeping the first publish of each
// UUID, the sequence numbers increase.
func checkKeyOrder(tb testing.TB, got []published) {
	tb.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	for _, p := range got {
		if seen[p.uuid] {
			continue
		}
		seen[p.uuid] = true
		if prev, ok := last[p.key]; ok && p.seq <= prev {
			tb.Fatalf("key %s: seq %d published after %d", p.key, p.seq, prev)
		}
		last[p.key] = p.seq
	}
}

var errTransient = errors.New("broker unavailable")

func fmtKey(i int) string { return fmt.Sprintf("key-%d", i) }

// hourLater is a SQL expression of col plus one hour.
func hourLater(d sqlstore.Dialect, col string) string {
	switch d {
	case sqlstore.Postgres:
		return col + " + interval '1 hour'"
	case sqlstore.MySQL:
		return col + " + INTERVAL 1 HOUR"
	default:
		return col + " + 3600000000"
	}
}

// testLogger shows relay errors with IDEMPO_OUTBOX_TEST_LOG=1.
var testLogger = func() watermill.LoggerAdapter {
	if os.Getenv("IDEMPO_OUTBOX_TEST_LOG") != "" {
		return watermill.NewStdLogger(false, false)
	}
	return watermill.NopLogger{}
}()

func messageWith(md message.Metadata) *message.Message {
	m := message.NewMessage("x", nil)
	m.Metadata = md
	return m
}
