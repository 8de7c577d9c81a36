package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// The databases every outbox command is tested on.
var outboxTestDBs = []struct{ name, url string }{
	{"postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
	{"mysql", "mysql://root@127.0.0.1:3306/test"},
	{"sqlite", ""}, // a file in the test's temp dir
}

// outboxFixture is an outbox table of its own on one database, opened in
// this process to write rows and check the table while the CLI works on it.
type outboxFixture struct {
	url, table string
	db         *sql.DB
	ob         *outbox.Outbox
}

func newOutboxFixture(t *testing.T, rawURL string) *outboxFixture {
	t.Helper()
	if rawURL == "" {
		rawURL = "sqlite://" + filepath.Join(t.TempDir(), "outbox.db")
	}
	spec, err := parseTestDB(rawURL)
	require.NoError(t, err)
	f := &outboxFixture{url: rawURL, table: "idempo_outbox_cli_" + strings.ToLower(watermill.NewShortUUID())}
	f.db = spec
	t.Cleanup(func() {
		for _, suffix := range []string{"", "_leases", "_dead", "_keys"} {
			_, _ = f.db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+f.table+suffix)
		}
		_ = f.db.Close()
	})
	f.ob, err = outbox.New(f.db, &outbox.Options{Table: f.table})
	require.NoError(t, err)
	require.NoError(t, f.ob.Migrate(t.Context()))
	return f
}

// parseTestDB opens a --db URL the way the tests need it.
func parseTestDB(raw string) (*sql.DB, error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"):
		return sql.Open("pgx", raw)
	case strings.HasPrefix(raw, "mysql://"):
		return sql.Open("mysql", "root@tcp(127.0.0.1:3306)/test?parseTime=true")
	default:
		return sqlstore.OpenSQLite(strings.TrimPrefix(raw, "sqlite://"))
	}
}

// write commits n messages of topic, key i%keys (or the message's UUID
// when keys is 0), each with payload size bytes, in transactions of up to
// 50 messages; it returns their UUIDs in commit order.
func (f *outboxFixture) write(t *testing.T, topic string, n, keys, size int) []string {
	t.Helper()
	var uuids []string
	for start := 0; start < n; start += 50 {
		tx, err := f.db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		var msgs []*message.Message
		for i := start; i < min(n, start+50); i++ {
			m := message.NewMessage(watermill.NewUUID(), []byte(strings.Repeat("x", max(size-8, 0))+fmt.Sprintf("%08d", i)))
			if keys > 0 {
				m.Metadata.Set(kafka.PartitionKeyMetadata, "key-"+strconv.Itoa(i%keys))
			}
			msgs = append(msgs, m)
			uuids = append(uuids, m.UUID)
		}
		require.NoError(t, f.ob.Write(t.Context(), tx, topic, msgs...))
		require.NoError(t, tx.Commit())
	}
	return uuids
}

// status sums the table's status over its topics.
func (f *outboxFixture) status(t *testing.T) (pending, dead int64) {
	t.Helper()
	sts, err := f.ob.Status(t.Context())
	require.NoError(t, err)
	for _, s := range sts {
		pending += s.Pending
		dead += s.Dead
	}
	return pending, dead
}

// waitStatus waits until the table has pending and dead rows.
func (f *outboxFixture) waitStatus(t *testing.T, pending, dead int64, procs ...*cliProc) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		p, d := f.status(t)
		if p == pending && d == dead {
			return
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, pr := range procs {
				logs = append(logs, pr.stderr.String())
			}
			t.Fatalf("the table has %d pending and %d dead rows after 90s, want %d and %d; relay output:\n%s", p, d, pending, dead, strings.Join(logs, "\n---\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cliProc is the CLI running as a process of its own (this test binary,
// see TestMain), so that it can be sent signals.
type cliProc struct {
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	exited chan struct{}
	err    error
}

func startCLI(t *testing.T, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: exec.Command(os.Args[0], args...), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "IDEMPO_TEST_CLI=1")
	p.cmd.Stdout = &p.stdout
	pipe, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			_, _ = p.stderr.Write(append(sc.Bytes(), '\n'))
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitFor waits until the process's stderr contains s.
func (p *cliProc) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		select {
		case <-p.exited:
			t.Fatalf("exited (%v) before printing %q; stderr:\n%s", p.err, s, p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("printed no %q within 90s; stderr:\n%s", s, p.stderr.String())
		}
	}
}

// interrupt sends SIGINT and returns the exit status.
func (p *cliProc) interrupt(t *testing.T) int {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
	select {
	case <-p.exited:
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("did not exit within 90s of SIGINT; stderr:\n%s", p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// receiveUUIDs reads topic from the start until every message of want
// came, and returns the UUIDs and record keys of all it read (repeats
// included), in topic order.
func receiveUUIDs(t *testing.T, cluster *embedded.Cluster, topic string, want []string) (uuids, keys []string) {
	t.Helper()
	sub, err := kafka.NewSubscriber(cluster.Config("check-"+watermill.NewShortUUID()), nil)
	require.NoError(t, err)
	defer func() { _ = sub.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	missing := map[string]bool{}
	for _, u := range want {
		missing[u] = true
	}
	for len(missing) > 0 {
		select {
		case m, ok := <-ch:
			require.True(t, ok, "subscription closed with %d of %d messages missing", len(missing), len(want))
			uuids = append(uuids, m.UUID)
			keys = append(keys, m.Metadata.Get("idempo_original_key"))
			delete(missing, m.UUID)
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("%d of %d messages of %s missing after 90s", len(missing), len(want), topic)
		}
	}
	return uuids, keys
}

func outboxJSON[T any](t *testing.T, args ...string) T {
	t.Helper()
	code, out, errOut := runCLI(t, append(args, "--json")...)
	require.Equal(t, 0, code, "%v: %s", args, errOut)
	var v T
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	return v
}

// TestRelayAndOutboxCommands: on each database, a relay process publishes
// a table's rows to Kafka and moves a message the broker refuses to the
// dead table; status, dead and requeue show and operate it; SIGINT stops
// the relay with exit status 0 and its leases released, so that a second
// relay, with the same ten-minute lease, publishes every bucket's rows at
// once.
func TestRelayAndOutboxCommands(t *testing.T) {
	cluster, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	for _, tdb := range outboxTestDBs {
		t.Run(tdb.name, func(t *testing.T) {
			t.Parallel()
			f := newOutboxFixture(t, tdb.url)
			topic, big := "orders-"+watermill.NewShortUUID(), "big-"+watermill.NewShortUUID()
			common := []string{"--db", f.url, "--table", f.table}
			written := f.write(t, topic, 40, 8, 10)
			f.write(t, big, 1, 0, 2<<20) // over the broker's message size limit

			st := outboxJSON[statusResult](t, append([]string{"outbox", "status"}, common...)...)
			require.EqualValues(t, 41, st.Pending)
			require.Len(t, st.Topics, 2)
			require.Positive(t, st.OldestPendingMS)

			relayArgs := append([]string{"relay", "--broker", cluster.URL(), "--max-attempts", "1", "--lease", "10m", "--progress", "100ms"}, common...)
			r1 := startCLI(t, relayArgs...)
			r1.waitFor(t, "idempo relay: broker: ")
			f.waitStatus(t, 0, 1, r1)
			r1.waitFor(t, "dead 1")
			got, keys := receiveUUIDs(t, cluster, topic, written)
			require.ElementsMatch(t, written, got, "each message once: no relay crashed")
			requireKeyOrder(t, written, got, keys)

			require.Equal(t, 0, r1.interrupt(t), "stderr:\n%s", r1.stderr.String())
			require.Contains(t, r1.stderr.String(), "stopped, leases released: published 40")

			dead := outboxJSON[deadResult](t, append([]string{"outbox", "dead", "--topic", big}, common...)...)
			require.Len(t, dead.Rows, 1)
			require.Equal(t, big, dead.Rows[0].Topic)
			require.NotEmpty(t, dead.Rows[0].Reason)
			require.Equal(t, 1, dead.Rows[0].Attempts)
			code, out, errOut := runCLI(t, append([]string{"outbox", "dead"}, common...)...)
			require.Equal(t, 0, code, errOut)
			require.Contains(t, out, "1 dead row in "+f.table)
			require.Contains(t, out, dead.Rows[0].UUID)
			t.Logf("idempo outbox dead:\n%s", out)

			st = outboxJSON[statusResult](t, append([]string{"outbox", "status"}, common...)...)
			require.EqualValues(t, 0, st.Pending)
			require.EqualValues(t, 1, st.Dead)

			code, _, errOut = runCLI(t, append([]string{"outbox", "requeue", "--id", "999999999"}, common...)...)
			require.Equal(t, 1, code, "an id that is no dead row: %s", errOut)
			require.Contains(t, errOut, "not dead rows")
			req := outboxJSON[requeueResult](t, append([]string{"outbox", "requeue", "--id", strconv.FormatInt(dead.Rows[0].ID, 10)}, common...)...)
			require.Equal(t, 1, req.Requeued)
			pending, deadN := f.status(t)
			require.EqualValues(t, 1, pending)
			require.EqualValues(t, 0, deadN)

			// The first relay's ten-minute leases were released: a second one
			// gets every bucket now (the rows' keys are their UUIDs, so they
			// fall into most of the buckets).
			more := f.write(t, topic, 200, 0, 10)
			r2 := startCLI(t, relayArgs...)
			f.waitStatus(t, 0, 1, r2)
			_, _ = receiveUUIDs(t, cluster, topic, more)
			require.Equal(t, 0, r2.interrupt(t), "stderr:\n%s", r2.stderr.String())

			code, out, errOut = runCLI(t, append([]string{"outbox", "requeue", "--topic", big}, common...)...)
			require.Equal(t, 0, code, errOut)
			require.Equal(t, "requeued 1 row into "+f.table+"\n", out)
			code, out, errOut = runCLI(t, append([]string{"outbox", "status"}, common...)...)
			require.Equal(t, 0, code, errOut)
			require.Contains(t, out, f.table+": 1 pending, 0 dead in ")
			t.Logf("idempo outbox status:\n%s", out)
		})
	}
}

// requireKeyOrder checks that the first delivery of each message comes in
// the order the messages were committed within their key.
func requireKeyOrder(t *testing.T, written, got, keys []string) {
	t.Helper()
	pos := map[string]int{}
	for i, u := range written {
		pos[u] = i
	}
	seen := map[string]bool{}
	last := map[string]int{}
	for i, u := range got {
		if seen[u] {
			continue
		}
		seen[u] = true
		if p, ok := last[keys[i]]; ok {
			require.Greater(t, pos[u], p, "key %s: message %d published after message %d", keys[i], pos[u], p)
		}
		last[keys[i]] = pos[u]
	}
}

// TestSeveralRelays: three relay processes on one table while rows are
// committed publish every row, each key's rows in commit order (the first
// delivery of each); stopping one with SIGINT and killing another with
// SIGKILL midway loses nothing: the last one takes over their buckets.
func TestSeveralRelays(t *testing.T) {
	cluster, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	for _, tdb := range []struct{ name, url string }{outboxTestDBs[0], outboxTestDBs[2]} {
		t.Run(tdb.name, func(t *testing.T) {
			t.Parallel()
			f := newOutboxFixture(t, tdb.url)
			topic := "orders-" + watermill.NewShortUUID()
			args := []string{"relay", "--broker", cluster.URL(), "--db", f.url, "--table", f.table, "--lease", "2s", "--batch", "16", "--progress", "0"}
			var relays []*cliProc
			for range 3 {
				p := startCLI(t, args...)
				p.waitFor(t, "idempo relay: broker: ")
				relays = append(relays, p)
			}
			var (
				mu      sync.Mutex
				written []string
				wg      sync.WaitGroup
			)
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(written) }
			for w := range 4 {
				wg.Go(func() {
					for i := range 10 {
						if err := writeOrdered(t.Context(), f, topic, w, i, &mu, &written); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			// Stop one relay while the writers are half-way, and kill another
			// (its leases run out after 2s) at three quarters.
			waitCount := func(n int) {
				for deadline := time.Now().Add(90 * time.Second); count() < n && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
			}
			waitCount(200)
			require.Equal(t, 0, relays[0].interrupt(t), relays[0].stderr.String())
			waitCount(300)
			require.NoError(t, relays[1].cmd.Process.Kill())
			<-relays[1].exited
			wg.Wait()
			require.False(t, t.Failed())
			f.waitStatus(t, 0, 0, relays[2])
			got, keys := receiveUUIDs(t, cluster, topic, written)
			requireKeyOrder(t, written, got, keys)
			require.Equal(t, 0, relays[2].interrupt(t), relays[2].stderr.String())
		})
	}
}

// writeOrdered commits ten messages of writer w's batch i (20 keys in all)
// and appends their UUIDs to written in their keys' commit order: Write's
// per-key lock makes a second transaction on a key wait until the first
// committed, and the first appends before it commits.
func writeOrdered(ctx context.Context, f *outboxFixture, topic string, w, i int, mu *sync.Mutex, written *[]string) error {
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	var msgs []*message.Message
	for j := range 10 {
		m := message.NewMessage(watermill.NewUUID(), []byte("x"))
		m.Metadata.Set(kafka.PartitionKeyMetadata, fmt.Sprintf("key-%d", (w*100+i*10+j)%20))
		msgs = append(msgs, m)
	}
	if err := f.ob.Write(ctx, tx, topic, msgs...); err != nil {
		_ = tx.Rollback()
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range msgs {
		*written = append(*written, m.UUID)
	}
	return tx.Commit()
}

func TestOutboxBadInput(t *testing.T) {
	t.Parallel()
	db := "sqlite://" + filepath.Join(t.TempDir(), "o.db")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"outbox"}, "Usage: idempo outbox"},
		{[]string{"outbox", "nope"}, `unknown command "nope"`},
		{[]string{"outbox", "status"}, "--db required"},
		{[]string{"outbox", "status", "--db", "redis://127.0.0.1:6379/0"}, `--db "redis://127.0.0.1:6379/0": unknown scheme "redis"`},
		{[]string{"outbox", "status", "--db", "postgres://u:secret@%zz/db"}, "invalid URL"},
		{[]string{"outbox", "status", "--db", "sqlite"}, "not a URL"},
		{[]string{"outbox", "status", "--db", db, "--table", "bad;name"}, `--table "bad;name"`},
		{[]string{"outbox", "status", "--db", db, "--buckets", "5000"}, "--buckets must be between 0 and 4096"},
		{[]string{"outbox", "dead", "--db", db, "--limit", "0"}, "--limit must be > 0"},
		{[]string{"outbox", "requeue", "--db", db}, "nothing selected: give --topic or --id"},
		{[]string{"outbox", "requeue", "--db", db, "--topic", "t", "--id", "1"}, "not both"},
		{[]string{"outbox", "requeue", "--db", db, "--id", "-3"}, `--id "-3" is not a row id`},
		{[]string{"outbox", "status", "--db", db, "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"outbox", "status", "--db", "postgres://u:secret@127.0.0.1:1/x"}, "unreachable"},
		{[]string{"relay", "--db", db}, "--broker required"},
		{[]string{"relay", "--db", db, "--broker", "gochannel"}, "real broker"},
		{[]string{"relay", "--db", db, "--broker", "kafka"}, "vanishes with the relay"},
		{[]string{"relay", "--db", db, "--broker", "mqtt://x:1"}, `unknown scheme "mqtt"`},
		{[]string{"relay", "--broker", "kafka://127.0.0.1:9092"}, "--db required"},
		{[]string{"relay", "--db", db, "--broker", "kafka://127.0.0.1:9092", "--batch", "0"}, "--batch must be > 0"},
		{[]string{"relay", "--db", db, "--broker", "kafka://127.0.0.1:9092", "--lease", "100ms"}, "--lease must be at least 1s"},
		{[]string{"relay", "--db", db, "--broker", "kafka://127.0.0.1:9092", "--poll", "0s"}, "--poll must be > 0"},
		{[]string{"relay", "--db", db, "--broker", "kafka://127.0.0.1:9092", "--max-attempts", "0"}, "--max-attempts must be > 0"},
		{[]string{"relay", "--db", db, "--broker", "kafka://127.0.0.1:9092", "--retention", "-1s"}, "--retention must be >= 0"},
		{[]string{"relay", "--db", db, "--broker", "amqp://guest:secret@127.0.0.1:1/", "--migrate"}, "open broker amqp://guest:xxxxx@127.0.0.1:1/"},
		{[]string{"outbox", "status", "--db", db, "--table", "never_created"}, "cannot read its lease table never_created_leases (are the tables created? 'idempo relay --migrate'"},
		{[]string{"outbox", "dead", "--db", db, "--table", "never_created"}, "'idempo relay --migrate'"},
		{[]string{"relay", "--db", db, "--broker", "amqp://guest:secret@127.0.0.1:1/", "--table", "never_created"}, "'idempo relay --migrate'"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, out+errOut, tc.want, "%v", tc.args)
		require.NotContains(t, out+errOut, "secret", "%v: passwords are never printed", tc.args)
		if (tc.args[0] == "relay" || len(tc.args) > 2) && tc.want != "unreachable" {
			require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "%v: one line, got:\n%s", tc.args, errOut)
		}
	}
}

// The outbox commands print no credential of --db or --broker, on success
// (PostgreSQL trusts local connections and ignores the password) and on
// failure alike, as text and JSON; the relay runs until its context ends,
// and once as a process of its own, so that whatever reaches the process's
// stderr by another way is checked too.
func TestOutboxSecretsAreNeverPrinted(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	f := newOutboxFixture(t, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	f.write(t, "t", 1, 0, 10)
	for _, db := range []string{
		"postgres://postgres:" + secret + "@127.0.0.1:5432/test?sslmode=disable",
		"postgres://127.0.0.1:5432/test?sslmode=disable&user=postgres&password=" + secret,
		"postgres://u:" + secret + "@127.0.0.1:1/x",
		"mysql://u:" + secret + "@127.0.0.1:1/db",
		"mysql://root:" + secret + "@127.0.0.1:3306/test",
	} {
		common := []string{"--db", db, "--table", f.table}
		for _, args := range [][]string{
			append([]string{"outbox", "status"}, common...),
			append([]string{"outbox", "dead"}, common...),
			append([]string{"outbox", "requeue", "--topic", "t"}, common...),
			append([]string{"relay", "--broker", "amqp://guest:" + secret + "@127.0.0.1:5672/", "--progress", "50ms"}, common...),
			append([]string{"relay", "--broker", "kafka://u:" + secret + "@127.0.0.1:1"}, common...),
		} {
			for _, extra := range [][]string{nil, {"--json"}, {"--no-such-flag"}} {
				args := append(append([]string{}, args...), extra...)
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				var stdout, stderr lockedBuffer
				code := run(ctx, args, &stdout, &stderr)
				cancel()
				require.NotContains(t, stdout.String(), secret, "%v (exit %d)", args, code)
				require.NotContains(t, stderr.String(), secret, "%v (exit %d)", args, code)
			}
		}
	}
	cluster, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	defer cluster.Close()
	p := startCLI(t, "relay", "--db", "postgres://postgres:"+secret+"@127.0.0.1:5432/test?sslmode=disable", "--table", f.table,
		"--broker", cluster.URL(), "--progress", "50ms")
	p.waitFor(t, "; table: pending 0")
	require.Equal(t, 0, p.interrupt(t), p.stderr.String())
	require.Contains(t, p.stderr.String(), "db: postgres://postgres:xxxxx@127.0.0.1:5432/test")
	require.NotContains(t, p.stdout.String()+p.stderr.String(), secret)
}

// Without --buckets the commands take the table's own bucket count: an
// outbox created by an application with another count than the package
// default is operated as it is.
func TestOutboxCommandsTakeTheTablesBuckets(t *testing.T) {
	t.Parallel()
	url := "sqlite://" + filepath.Join(t.TempDir(), "o.db")
	db, err := parseTestDB(url)
	require.NoError(t, err)
	defer func() { _ = db.Close() }()
	ob, err := outbox.New(db, &outbox.Options{Table: "app_outbox", Buckets: 8})
	require.NoError(t, err)
	require.NoError(t, ob.Migrate(t.Context()))
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	require.NoError(t, ob.Write(t.Context(), tx, "orders", message.NewMessage(watermill.NewUUID(), nil)))
	require.NoError(t, tx.Commit())

	code, out, errOut := runCLI(t, "outbox", "status", "--db", url, "--table", "app_outbox")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out+errOut, "1 pending")
	code, _, errOut = runCLI(t, "outbox", "status", "--db", url, "--table", "app_outbox", "--buckets", "64")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Options.Buckets is 64 but table app_outbox was migrated with 8", "an explicit --buckets is still checked")
}
