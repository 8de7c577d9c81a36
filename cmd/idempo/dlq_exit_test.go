package main

import (
	"context"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// The exit status of each outcome is the documented one: a filter or
// --all-unresolved selecting nothing is 0, a --snapshot with nothing left
// is 1; unknown error classes and bad tokens are refused before anything
// is opened or printed; a dry run that counted nothing prints no token and
// one that did says how to use it; --operator names who acted; an entry
// without a destination names --to.
func TestDLQExitStatusAndTokens(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	perm := permanentFailure()
	deadLetter(t, pub, "orders", "billing", "ev-a", "a", perm)
	deadLetter(t, pub, "orders", "billing", "ev-b", "b", perm)
	common := []string{"--broker", emb.URL(), "--store", "sqlite://" + filepath.Join(t.TempDir(), "r.db"), "--topic", "orders.dlq"}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}

	code, out, errOut := cli("list", "--handler", "nobody")
	require.Equal(t, 0, code, "a filter that selects nothing is not an error: %s", errOut)
	require.Empty(t, out)

	code, out, errOut = cli("replay", "--error-class", "transient")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, `--error-class "transient" is not one of permanent, retryable, panic`)
	require.Empty(t, out)

	v2 := "s1." + base64.RawURLEncoding.EncodeToString([]byte(`{"v":2,"k":"replay","t":"orders.dlq","n":1}`))
	for token, want := range map[string]string{
		"s1.xyz": "not a snapshot token printed by a dry run",
		v2:       "version 2 is not understood (this idempo understands version 1",
	} {
		code, out, errOut = cli("replay", "--snapshot", token)
		require.Equal(t, 2, code, errOut)
		require.Contains(t, errOut, want)
		require.NotContains(t, errOut, "invalid character")
		require.Empty(t, out, "nothing printed before the error")
	}

	code, out, errOut = cli("replay", "--id", "nope", "--dry-run")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "no such entry")
	require.NotContains(t, out, "snapshot", "no token when nothing matched")

	code, out, errOut = cli("purge", "--all-unresolved", "--dry-run")
	require.Equal(t, 0, code, errOut)
	tok := ""
	for line := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(line, "snapshot: "); ok {
			tok = v
		}
	}
	require.NotEmpty(t, tok, out)
	require.Contains(t, out, "(pass --snapshot "+tok+" to purge exactly these entries)")
	code, out, errOut = cli("purge", "--snapshot", tok, "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "purged 2, skipped 0, failed 0")
	code, out, errOut = cli("purge", "--snapshot", tok, "--yes")
	require.Equal(t, 1, code, "a spent snapshot had nothing to do: %s", errOut)
	require.Contains(t, out, "purged 0, skipped 2, failed 0")
	require.Contains(t, errOut, "nothing to do")

	code, out, errOut = cli("replay", "--all-unresolved")
	require.Equal(t, 0, code, "--all-unresolved with nothing left is not an error: %s", errOut)
	require.Contains(t, out, "replayed 0, parked 0, skipped 0, failed 0")

	idC := deadLetter(t, pub, "orders", "billing", "ev-c", "c", perm)
	code, _, errOut = cli("replay", "--id", idC, "--to", "orders.retry", "--operator", "alice@ops")
	require.Equal(t, 0, code, errOut)
	code, out, errOut = cli("list", "--all", "--json")
	require.Equal(t, 0, code, errOut)
	by := map[string]any{}
	for _, r := range jsonLines(t, out) {
		by[r["id"].(string)] = r["resolved_by"]
	}
	require.Equal(t, "alice@ops", by[idC], "--operator names who acted")

	bad := message.NewMessage("bad-uuid", []byte("from another tool"))
	bad.Metadata.Set(dlqmeta.KeyEntryID, "bad-entry")
	require.NoError(t, pub.Publish("orders.dlq", bad))
	code, _, errOut = cli("replay", "--id", "bad-entry")
	require.Equal(t, 3, code, errOut)
	require.Contains(t, errOut, "replay it with --id bad-entry --to TOPIC")
}

// show counts the failure history in good English.
func TestDLQShowOneOtherEntry(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	perm := permanentFailure()
	id := deadLetter(t, pub, "orders", "billing", "ev-a", "a", perm)
	r, err := dlq.New(dlq.Config{Publisher: pub})
	require.NoError(t, err)
	again := message.NewMessage("ev-a", []byte("a"))
	again.Metadata.Set(dlqmeta.KeyReplays, "1") // the replay failed too
	require.NoError(t, r.Publish(context.Background(), again, dlq.Info{OriginalTopic: "orders", Handler: "billing", Scope: "billing", EventID: "ev-a", Deliveries: 1, Failure: perm}))
	code, out, errOut := runCLI(t, "dlq", "show", id, "--broker", emb.URL(), "--store", "sqlite://"+filepath.Join(t.TempDir(), "r.db"), "--topic", "orders.dlq")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "failure history (1 other entry of this event)")
}

// An entry parked past --max-replays lists, shows and replays from the
// parking topic: its dead-letter copy was parked, not the replay message.
func TestDLQParkingTopicIsADLQ(t *testing.T) {
	emb, pub := startKafkaDLQ(t)
	perm := permanentFailure()
	r, err := dlq.New(dlq.Config{Publisher: pub})
	require.NoError(t, err)
	m := message.NewMessage("ev-p", []byte("p"))
	m.Metadata.Set(dlqmeta.KeyReplays, "1") // a replay that failed again
	require.NoError(t, r.Publish(context.Background(), m, dlq.Info{OriginalTopic: "orders", Handler: "billing", Scope: "billing", EventID: "ev-p", Deliveries: 1, Failure: perm}))
	id := dlqmeta.EntryID("billing", "ev-p", "ev-p", 1)
	store := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	cli := func(topic string, args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), "--broker", emb.URL(), "--store", store, "--topic", topic)...)
	}
	code, out, errOut := cli("orders.dlq", "replay", "--all-unresolved", "--max-replays", "1")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "replayed 0, parked 1")

	code, out, errOut = cli("orders.dlq.parked", "list")
	require.Equal(t, 0, code, errOut)
	rows := jsonLines(t, out)
	require.Len(t, rows, 1)
	require.Equal(t, id, rows[0]["id"])
	require.Equal(t, "orders", rows[0]["original_topic"])
	require.Equal(t, dlq.ReasonPermanent, rows[0]["reason"])
	require.Nil(t, rows[0]["problems"])
	code, out, errOut = cli("orders.dlq.parked", "show", id)
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, "problem")
	code, out, errOut = cli("orders.dlq.parked", "replay", "--all-unresolved", "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "would replay "+id+" (event ev-p, replays 1) to orders")
}
