package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// The kill test re-executes the test binary as a relay process (the child
// mode below) and kills it with SIGKILL in the middle of a batch.
const (
	childEnv        = "IDEMPO_OUTBOX_TEST_CHILD"
	childDialectEnv = "IDEMPO_OUTBOX_TEST_DIALECT"
	childDSNEnv     = "IDEMPO_OUTBOX_TEST_DSN"
	childTableEnv   = "IDEMPO_OUTBOX_TEST_TABLE"
	childPubEnv     = "IDEMPO_OUTBOX_TEST_PUBLISHED"
	childBlockEnv   = "IDEMPO_OUTBOX_TEST_BLOCK_AFTER"
)

// runChildIfAsked runs the child relay and exits the process when the
// environment asks for it.
func runChildIfAsked() bool {
	if os.Getenv(childEnv) != "relay" {
		return false
	}
	if err := childRelay(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(3)
	}
	os.Exit(0)
	return true
}

// tablePublisher "publishes" by inserting each message into a table of the
// test database, in publish order: the broker's log. With blockAfter > 0 it
// hangs for good once it has published that many (mid-batch).
type tablePublisher struct {
	db         *sql.DB
	insert     string
	blockAfter int64
	n          atomic.Int64
}

func newTablePublisher(d sqlstore.Dialect, db *sql.DB, table string) *tablePublisher {
	q := "INSERT INTO " + quote(d, table) + " (uuid, msg_key, seq, pid) VALUES (?, ?, ?, ?)"
	if d == sqlstore.Postgres {
		q = "INSERT INTO " + quote(d, table) + " (uuid, msg_key, seq, pid) VALUES ($1, $2, $3, $4)"
	}
	return &tablePublisher{db: db, insert: q}
}

func (p *tablePublisher) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		seq, _ := strconv.Atoi(m.Metadata.Get("seq"))
		if _, err := p.db.Exec(p.insert, m.UUID, m.Metadata.Get(outbox.KeyMetadata), seq, os.Getpid()); err != nil {
			return err
		}
		if p.blockAfter > 0 && p.n.Add(1) >= p.blockAfter {
			select {} // killed here, published but not marked
		}
	}
	return nil
}

func (p *tablePublisher) Close() error { return nil }

func createPublished(tb testing.TB, e *env) string {
	tb.Helper()
	name := randomName("published_")
	id := map[sqlstore.Dialect]string{
		sqlstore.Postgres: "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		sqlstore.MySQL:    "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
		sqlstore.SQLite:   "INTEGER PRIMARY KEY AUTOINCREMENT",
	}[e.d]
	_, err := e.db.Exec("CREATE TABLE " + quote(e.d, name) + " (id " + id + ", uuid VARCHAR(64) NOT NULL, msg_key VARCHAR(64) NOT NULL, seq INTEGER NOT NULL, pid INTEGER NOT NULL)")
	require.NoError(tb, err)
	tb.Cleanup(func() { _, _ = e.db.Exec("DROP TABLE IF EXISTS " + quote(e.d, name)) })
	return name
}

func childRelay() error {
	d := sqlstore.Dialect(os.Getenv(childDialectEnv))
	block, err := strconv.ParseInt(os.Getenv(childBlockEnv), 10, 64)
	if err != nil {
		return err
	}
	ctx := context.Background()
	db, err := openDSN(ctx, d, os.Getenv(childDSNEnv), 4)
	if err != nil {
		return err
	}
	defer db.Close()
	ob, err := outbox.New(db, &outbox.Options{Table: os.Getenv(childTableEnv)})
	if err != nil {
		return err
	}
	if os.Getenv(childAMQPEnv) != "" {
		return childAMQPRelay(ob, block)
	}
	pub := newTablePublisher(d, db, os.Getenv(childPubEnv))
	pub.blockAfter = block
	cfg := fast(pub)
	cfg.BatchSize = 10
	r, err := outbox.NewRelay(ob, cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// TestKillRelayMidBatch kills a relay process that has published part of a
// batch and not marked it. Another relay takes its buckets after the lease
// and publishes the rest: no row is lost, duplicates carry the same UUID,
// and per key the first publishes stay in order.
func TestKillRelayMidBatch(t *testing.T) {
	t.Parallel()
	forEachDialect(t, func(t *testing.T, d sqlstore.Dialect) {
		e := newEnv(t, d, nil)
		pubTable := createPublished(t, e)
		const keys, perKey, blockAfter = 5, 30, 35
		written := map[string]bool{}
		for s := range perKey {
			var ms []*message.Message
			for k := range keys {
				m := msg(fmtKey(k), s)
				written[m.UUID] = true
				ms = append(ms, m)
			}
			e.write(t, "t", ms...)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=relay", childDialectEnv+"="+string(d), childDSNEnv+"="+e.dsn,
			childTableEnv+"="+e.ob.Table(), childPubEnv+"="+pubTable, childBlockEnv+"="+strconv.Itoa(blockAfter))
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		count := func() int {
			var n int
			require.NoError(t, e.db.QueryRow("SELECT COUNT(*) FROM "+quote(d, pubTable)).Scan(&n))
			return n
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := time.After(60 * time.Second)
		for count() < blockAfter {
			select {
			case err := <-exited:
				t.Fatalf("the relay process exited before it was killed: %v", err)
			case <-deadline:
				_ = cmd.Process.Kill()
				<-exited
				t.Fatal("the relay process did not publish in 60s")
			case <-time.After(10 * time.Millisecond):
			}
		}
		require.NoError(t, cmd.Process.Kill())
		err := <-exited
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit) && !exit.Exited(), "killed by a signal: %v", err)
		require.Equal(t, keys*perKey-blockAfter/10*10, e.count(t, "", ""), "the killed batch (of 10) is not marked")

		_, stop := runRelay(t, e.ob, fast(newTablePublisher(d, e.db, pubTable)))
		defer stop()
		waitFor(t, 60*time.Second, "the rest published after the lease", func() bool { return e.count(t, "", "") == 0 })
		stop()

		rows, err := e.db.Query("SELECT uuid, msg_key, seq FROM " + quote(d, pubTable) + " ORDER BY id")
		require.NoError(t, err)
		defer func() { _ = rows.Close() }()
		var got []published
		times := map[string]int{}
		for rows.Next() {
			var p published
			require.NoError(t, rows.Scan(&p.uuid, &p.key, &p.seq))
			require.True(t, written[p.uuid], "published a UUID never written: %s", p.uuid)
			times[p.uuid]++
			got = append(got, p)
		}
		require.NoError(t, rows.Err())
		require.Len(t, times, len(written), "every row published")
		dups := len(got) - len(times)
		require.Positive(t, dups, "the killed batch's published rows are published again")
		// Rows marked before the kill are not published again: only the
		// killed batch's (at most its 10 rows, each once more).
		require.LessOrEqual(t, dups, 10, "rows marked before the kill were published again")
		for u, n := range times {
			require.LessOrEqual(t, n, 2, "%s published %d times", u, n)
		}
		t.Logf("%s: %d rows, %d published again after the kill", d, len(written), dups)
		checkKeyOrder(t, got)
	})
}
