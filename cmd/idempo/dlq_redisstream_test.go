package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/redisstreamdlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

func TestDLQOnRedisStreams(t *testing.T) {
	orig := "idempo_clitest_orders_" + watermill.NewShortUUID()
	topic := orig + ".dlq"
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	require.NoError(t, client.Ping(context.Background()).Err(), "Redis is required at 127.0.0.1:6379")
	t.Cleanup(func() {
		_ = client.Del(context.Background(), orig, topic, topic+".parked").Err()
		_ = client.Close()
	})
	pub, err := redisstreamdlq.NewDLQPublisher(redisstream.Config{URL: redisStreamURL}, nil)
	require.NoError(t, err)
	defer pub.Close()
	now := time.Now()
	perm := dlq.Failure{Reason: dlq.ReasonPermanent, Error: "bad amount", ErrorClass: "permanent", Attempts: 1, FirstFailure: now, LastFailure: now}
	idA := deadLetter(t, pub, orig, "billing", "ev-a", `{"amount":-1}`, perm)
	idB := deadLetter(t, pub, orig, "billing", "ev-b", `{"amount":-2}`, perm)
	idC := deadLetter(t, pub, orig, "shipping", "ev-c", "\x00\xff", dlq.Failure{
		Reason: dlq.ReasonRetriesExhausted, Error: "timeout", ErrorClass: "retryable", Attempts: 3, FirstFailure: now, LastFailure: now,
	})
	common := []string{"--broker", redisStreamURL, "--store", "sqlite://" + filepath.Join(t.TempDir(), "resolutions.db"), "--topic", topic}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}

	var rows []map[string]any
	code, out, errOut := cli("list")
	require.Equal(t, 0, code, errOut)
	rows = jsonLines(t, out)
	require.Len(t, rows, 3)
	require.Equal(t, idA, rows[0]["id"])
	require.Equal(t, "bad amount", rows[0]["error"])
	require.Equal(t, orig, rows[0]["original_topic"])
	first, err := client.XRangeN(context.Background(), topic, "-", "+", 1).Result()
	require.NoError(t, err)
	require.Len(t, first, 1)
	pos, _ := redisstreamdlq.Position(first[0].ID)
	require.Equal(t, pos, rows[0]["position"], "the position is the stream ID's")

	code, out, _ = cli("list", "--reason", dlq.ReasonRetriesExhausted)
	require.Equal(t, 0, code)
	require.Len(t, jsonLines(t, out), 1)
	code, out, _ = cli("list", "--handler", "billing", "--since", "1h", "--error-class", "permanent")
	require.Equal(t, 0, code)
	require.Len(t, jsonLines(t, out), 2)
	code, out, _ = cli("list", "--until", "1h")
	require.Equal(t, 0, code)
	require.Empty(t, jsonLines(t, out))
	code, out, _ = cli("list", "--table")
	require.Equal(t, 0, code)
	require.Contains(t, out, "ORIGINAL-TOPIC")
	require.Contains(t, out, "3 unresolved entries in "+topic)

	code, out, errOut = cli("show", idC, "--json")
	require.Equal(t, 0, code, errOut)
	var shown map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &shown))
	require.Equal(t, "base64", shown["payload_encoding"])
	require.Equal(t, "AP8=", shown["payload"])
	require.Equal(t, "acme", shown["metadata"].(map[string]any)["tenant"])
	require.Equal(t, "timeout", shown["error"])
	code, out, _ = cli("show", idA)
	require.Equal(t, 0, code)
	require.Contains(t, out, `{"amount":-1}`)
	require.Contains(t, out, "failure history")
	code, _, errOut = cli("show", "no-such-entry")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no such entry")

	code, out, errOut = cli("replay", "--id", idA, "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "would replay "+idA)
	require.Contains(t, out, "dry run: would replay 1, park 0")
	code, out, errOut = cli("replay", "--id", idA)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "replayed 1, parked 0, skipped 0")
	replayed, err := client.XRange(context.Background(), orig, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, replayed, 1, "the replay is in the original stream")
	d := wire.RedisUnmarshal(replayed[0].ID, replayed[0].Values)
	require.Equal(t, `{"amount":-1}`, string(d.Payload))
	require.Equal(t, idA, d.Metadata.Get(dlqmeta.KeyReplayID))
	require.Equal(t, "ev-a", d.UUID)
	require.Equal(t, "acme", d.Metadata.Get("tenant"))
	n, err := client.XLen(context.Background(), topic).Result()
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "listing, showing and replaying consumed nothing")

	code, _, errOut = cli("replay", "--id", idA)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "already replayed")
	code, _, errOut = cli("replay", "--id", "no-such-entry")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no such entry")

	code, out, _ = cli("list")
	require.Equal(t, 0, code)
	require.Len(t, jsonLines(t, out), 2)
	code, out, _ = cli("list", "--all")
	require.Equal(t, 0, code)
	rows = jsonLines(t, out)
	require.Len(t, rows, 3)
	require.Equal(t, "replayed", rows[0]["resolution"])

	// purge asks on a terminal; "n" purges nothing.
	oldIn, oldTerm := dlqStdin, dlqStdinIsTerminal
	t.Cleanup(func() { dlqStdin, dlqStdinIsTerminal = oldIn, oldTerm })
	dlqStdinIsTerminal = func() bool { return true }
	dlqStdin = strings.NewReader("n\n")
	code, _, errOut = cli("purge", "--handler", "billing")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "Purge 1 entries? [y/N]")
	dlqStdin = strings.NewReader("y\n")
	code, out, _ = cli("purge", "--handler", "billing")
	require.Equal(t, 0, code)
	require.Contains(t, out, "purged 1, skipped 0")
	code, _, errOut = cli("purge", "--yes", "--id", idB)
	require.Equal(t, 1, code, "already purged")
	require.Contains(t, errOut, "already purged")

	code, out, errOut = cli("replay", "--all-unresolved", "--json")
	require.Equal(t, 0, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.EqualValues(t, 1, res["replayed"])
	code, out, _ = cli("list")
	require.Equal(t, 0, code)
	require.Empty(t, strings.TrimSpace(out), "nothing unresolved")
	code, out, _ = cli("list", "--all")
	require.Equal(t, 0, code)
	got := map[string]string{}
	for _, r := range jsonLines(t, out) {
		got[r["id"].(string)] = r["resolution"].(string)
	}
	require.Equal(t, map[string]string{idA: "replayed", idB: "purged", idC: "replayed"}, got)
}
