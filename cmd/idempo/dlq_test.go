package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
)

const dlqTestAMQP = "amqp://guest:guest@127.0.0.1:5672/"

func TestDLQHelp(t *testing.T) {
	for _, args := range [][]string{
		{"dlq", "--help"},
		{"dlq", "help"},
		{"dlq", "list", "--help"},
		{"dlq", "show", "--help"},
		{"dlq", "replay", "--help"},
		{"dlq", "purge", "-h"},
	} {
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 0, code, "%v", args)
		require.Contains(t, out+errOut, "Usage: idempo dlq", "%v", args)
	}
}

func TestDLQBadInput(t *testing.T) {
	store := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	common := []string{"--broker", dlqTestAMQP, "--store", store}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq"}, "Usage: idempo dlq"},
		{[]string{"dlq", "nope"}, `unknown command "nope"`},
		{[]string{"dlq", "list", "--broker", dlqTestAMQP, "--store", store}, "--topic required"},
		{[]string{"dlq", "list", "--topic", "t"}, "--broker, --store required"},
		{append([]string{"dlq", "list", "--topic", "t", "--since", "yesterday"}, common...), `--since "yesterday" is neither an RFC 3339 time`},
		{append([]string{"dlq", "list", "--topic", "t", "--until", "-1h"}, common...), "must be positive"},
		{append([]string{"dlq", "list", "--topic", "t", "--reason", "oops"}, common...), `--reason "oops" is not one of`},
		{[]string{"dlq", "list", "--topic", "t", "--broker", "kafka", "--store", store}, "empty in-process Kafka cluster"},
		{[]string{"dlq", "list", "--topic", "t", "--broker", "gochannel", "--store", store}, "real broker"},
		{[]string{"dlq", "list", "--topic", "t", "--broker", dlqTestAMQP, "--store", "memory"}, "vanish"},
		{[]string{"dlq", "list", "--topic", "t", "--broker", "amqp://guest:secret@127.0.0.1:1/", "--store", store}, "unreachable"},
		{[]string{"dlq", "list", "--topic", "t", "--broker", "kafka://127.0.0.1:1", "--store", store}, "unreachable"},
		{append([]string{"dlq", "list", "--topic", "idempo_no_such_queue_" + watermill.NewShortUUID()}, common...), "no such queue"},
		{append([]string{"dlq", "show", "--topic", "t"}, common...), "want exactly one entry ID"},
		{append([]string{"dlq", "replay", "--topic", "t"}, common...), "nothing selected"},
		{append([]string{"dlq", "purge", "--topic", "t", "--all-unresolved"}, common...), "stdin is not a terminal"},
		{append([]string{"dlq", "replay", "--topic", "t", "stray"}, common...), "unexpected arguments"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.NotContains(t, errOut, "secret", "passwords are never printed")
	}
}

// deadLetter publishes a dead-letter copy the way the middleware does.
// startKafkaDLQ starts an embedded cluster and a publisher on it, both
// closed when the test ends.
func startKafkaDLQ(t *testing.T) (*embedded.Cluster, *kafka.Publisher) {
	t.Helper()
	emb, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	t.Cleanup(emb.Close)
	pub, err := kafka.NewPublisher(emb.Config(""), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return emb, pub
}

// permanentFailure is the history of a handler that failed once, for good.
func permanentFailure() dlq.Failure {
	now := time.Now()
	return dlq.Failure{Reason: dlq.ReasonPermanent, Error: "nope", ErrorClass: "permanent", Attempts: 1, FirstFailure: now, LastFailure: now}
}

func deadLetter(t *testing.T, pub message.Publisher, origTopic, handler, eventID, payload string, f dlq.Failure) string {
	t.Helper()
	r, err := dlq.New(dlq.Config{Publisher: pub})
	require.NoError(t, err)
	m := message.NewMessage(eventID, []byte(payload))
	m.Metadata.Set("tenant", "acme")
	info := dlq.Info{OriginalTopic: origTopic, Handler: handler, Scope: handler, EventID: eventID, Deliveries: 1, Failure: f}
	require.NoError(t, r.Publish(context.Background(), m, info))
	return dlqmeta.EntryID(handler, eventID, eventID, 0)
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var row map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &row), line)
		rows = append(rows, row)
	}
	return rows
}

func TestDLQOnKafka(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	now := time.Now()
	id := deadLetter(t, pub, "orders", "billing", "ev-k", "k-payload", dlq.Failure{Reason: dlq.ReasonPermanent, Error: "nope", ErrorClass: "permanent", Attempts: 1, FirstFailure: now, LastFailure: now})
	common := []string{"--broker", emb.URL(), "--store", "sqlite://" + filepath.Join(t.TempDir(), "r.db"), "--topic", "orders.dlq"}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}
	code, out, errOut := cli("list")
	require.Equal(t, 0, code, errOut)
	rows := jsonLines(t, out)
	require.Len(t, rows, 1)
	require.Equal(t, id, rows[0]["id"])
	require.Equal(t, "0/0", rows[0]["position"])
	code, out, errOut = cli("replay", "--original-topic", "orders", "--to", "orders.retry")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "replayed 1")
	code, _, errOut = runCLI(t, "dlq", "list", "--broker", emb.URL(), "--store", common[3], "--topic", "no_such_topic")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "no such topic")

	sub, err := kafka.NewSubscriber(emb.Config("check"), nil)
	require.NoError(t, err)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := sub.Subscribe(ctx, "orders.retry")
	require.NoError(t, err)
	select {
	case m := <-ch:
		m.Ack()
		require.Equal(t, "ev-k", m.UUID)
		require.Equal(t, id, m.Metadata.Get(dlqmeta.KeyReplayID))
	case <-ctx.Done():
		t.Fatal("the replay never arrived")
	}
}

// An entry that cannot be replayed (no original topic: written by another
// tool) is reported by ID, the others are replayed all the same, and the
// exit status says some failed; a dry run reports it too.
func TestDLQReplayGoesOnPastABadEntry(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	perm := permanentFailure()
	idA := deadLetter(t, pub, "orders", "billing", "ev-a", "a", perm)
	bad := message.NewMessage("bad-uuid", []byte("from another tool"))
	bad.Metadata.Set(dlqmeta.KeyEntryID, "bad-entry")
	require.NoError(t, pub.Publish("orders.dlq", bad))
	idB := deadLetter(t, pub, "orders", "billing", "ev-b", "b", perm)
	common := []string{"--broker", emb.URL(), "--store", "sqlite://" + filepath.Join(t.TempDir(), "r.db"), "--topic", "orders.dlq"}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}

	code, out, errOut := cli("replay", "--all-unresolved", "--dry-run")
	require.Equal(t, 3, code, errOut)
	require.Contains(t, out, "would replay "+idA)
	require.Contains(t, out, "would replay "+idB)
	require.Contains(t, out, "dry run: would replay 2, park 0, fail 1")
	require.Contains(t, errOut, "entry bad-entry at 0/1")
	require.Contains(t, errOut, "no original topic")
	require.Contains(t, errOut, "1 of 3 entries")

	code, out, errOut = cli("replay", "--all-unresolved")
	require.Equal(t, 3, code, errOut)
	require.Contains(t, out, "replayed 2, parked 0, skipped 0, failed 1")
	require.Contains(t, errOut, "entry bad-entry at 0/1")
	require.Contains(t, errOut, "1 of 3 entries")
	code, out, _ = cli("list")
	require.Equal(t, 0, code)
	rows := jsonLines(t, out)
	require.Len(t, rows, 1, "only the bad entry is left")
	require.Equal(t, "bad-entry", rows[0]["id"])

	code, out, errOut = cli("replay", "--all-unresolved", "--json")
	require.Equal(t, 3, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.EqualValues(t, 1, res["failed"])
	require.Equal(t, "bad-entry", res["failures"].([]any)[0].(map[string]any)["id"])

	code, out, errOut = cli("replay", "--id", "bad-entry", "--to", "orders")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "replayed 1, parked 0, skipped 0, failed 0")
}

// Dead letters that share one entry ID with different payloads (what
// producers without IDs left in a DLQ before entry IDs told them apart)
// list as separate entries and replay as separate events.
func TestDLQCollidingEntryIDs(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	const n = 20
	for i := range n {
		m := message.NewMessage("shared", []byte(fmt.Sprintf("payload-%d", i)))
		m.Metadata.Set(dlqmeta.KeyEntryID, "shared")
		m.Metadata.Set(dlqmeta.KeyOriginalTopic, "orders")
		m.Metadata.Set(dlqmeta.KeyReason, dlq.ReasonMissingEventID)
		require.NoError(t, pub.Publish("orders.dlq", m))
	}
	common := []string{"--broker", emb.URL(), "--store", "sqlite://" + filepath.Join(t.TempDir(), "r.db"), "--topic", "orders.dlq"}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}
	code, out, errOut := cli("list")
	require.Equal(t, 0, code, errOut)
	ids := map[string]bool{}
	for _, r := range jsonLines(t, out) {
		ids[r["id"].(string)] = true
	}
	require.Len(t, ids, n, "one entry per dead letter")

	code, out, errOut = cli("replay", "--all-unresolved", "--json")
	require.Equal(t, 0, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.EqualValues(t, n, res["replayed"])
	code, out, _ = cli("list")
	require.Equal(t, 0, code)
	require.Empty(t, strings.TrimSpace(out), "nothing unresolved")

	sub, err := kafka.NewSubscriber(emb.Config("check"), nil)
	require.NoError(t, err)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := sub.Subscribe(ctx, "orders")
	require.NoError(t, err)
	events := map[string]string{}
	for len(events) < n {
		select {
		case m := <-ch:
			m.Ack()
			require.Empty(t, m.UUID, "a replay invents no UUID")
			id := m.Metadata.Get(dlqmeta.KeyReplayID)
			require.NotContains(t, events, id, "each replay is its own event")
			events[id] = string(m.Payload)
			require.True(t, ids[id], "a replay without an original UUID carries its entry ID as its marker")
		case <-ctx.Done():
			t.Fatalf("got %d of %d replays", len(events), n)
		}
	}
}

// A dry run prints a snapshot token; replay and purge given it act on
// exactly the entries the dry run counted, not on later dead letters.
func TestDLQSnapshot(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	perm := permanentFailure()
	idA := deadLetter(t, pub, "orders", "billing", "ev-a", "a", perm)
	idB := deadLetter(t, pub, "orders", "billing", "ev-b", "b", perm)
	common := []string{"--broker", emb.URL(), "--store", "sqlite://" + filepath.Join(t.TempDir(), "r.db"), "--topic", "orders.dlq"}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}
	token := func(out string) string {
		t.Helper()
		for line := range strings.SplitSeq(out, "\n") {
			if tok, ok := strings.CutPrefix(line, "snapshot: "); ok {
				return tok
			}
		}
		t.Fatalf("no snapshot line in %q", out)
		return ""
	}
	code, out, errOut := cli("replay", "--all-unresolved", "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "dry run: would replay 2, park 0, fail 0")
	tok := token(out)
	idC := deadLetter(t, pub, "orders", "billing", "ev-c", "c", perm) // after the dry run

	code, _, errOut = cli("replay", "--snapshot", tok, "--handler", "billing")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--snapshot holds its dry run's selection")
	code, _, errOut = cli("purge", "--snapshot", tok, "--yes")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "snapshot of a replay, not of a purge")

	code, out, errOut = cli("replay", "--snapshot", tok, "--json")
	require.Equal(t, 0, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.EqualValues(t, 2, res["replayed"])
	require.Equal(t, false, res["dry_run"])
	code, out, _ = cli("list", "--all")
	require.Equal(t, 0, code)
	status := map[string]any{}
	for _, r := range jsonLines(t, out) {
		status[r["id"].(string)] = r["resolution"]
		if r["id"] == idA {
			require.NotEmpty(t, r["resolved_by"], "the record says who")
			require.NotEmpty(t, r["resolved_at"], "and when")
		}
	}
	require.Equal(t, map[string]any{idA: "replayed", idB: "replayed", idC: nil}, status, "the late dead letter is left alone")
	code, out, errOut = cli("show", idA)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `resolved by\s+\S*@\S* at 20`, out, "show says who resolved the entry and when")

	code, out, errOut = cli("purge", "--all-unresolved", "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "would purge "+idC)
	require.Contains(t, out, "dry run: would purge 1, fail 0")
	code, out, errOut = cli("purge", "--snapshot", token(out), "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "purged 1, skipped 0, failed 0")
}
