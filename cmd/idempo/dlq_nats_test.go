package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/natsdlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

// idempo dlq list/show/replay/purge on a NATS JetStream DLQ stream: listing
// reads by sequence and consumes nothing; a replay lands on the original
// topic's stream once.
func TestDLQOnNATS(t *testing.T) {
	orig := "idempo_clitest.orders." + watermill.NewShortUUID()
	topic := orig + ".dlq"
	nc, err := natsgo.Connect(natsURL)
	require.NoError(t, err, "NATS is required at %s", natsURL)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, tp := range []string{orig, topic, topic + ".parked"} {
			if name, err := nats.StreamName(tp); err == nil {
				_ = js.DeleteStream(ctx, name)
			}
		}
		nc.Close()
	})
	pub, err := natsdlq.NewDLQPublisher(nats.Config{URL: natsURL}, nil)
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, pub.EnsureStream(context.Background(), orig))
	now := time.Now()
	perm := dlq.Failure{Reason: dlq.ReasonPermanent, Error: "bad amount", ErrorClass: "permanent", Attempts: 1, FirstFailure: now, LastFailure: now}
	idA := deadLetter(t, pub, orig, "billing", "ev-a", `{"amount":-1}`, perm)
	idB := deadLetter(t, pub, orig, "billing", "ev-b", `{"amount":-2}`, perm)
	idC := deadLetter(t, pub, orig, "shipping", "ev-c", "\x00\xff", dlq.Failure{
		Reason: dlq.ReasonRetriesExhausted, Error: "timeout", ErrorClass: "retryable", Attempts: 3, FirstFailure: now, LastFailure: now,
	})
	common := []string{"--broker", natsURL, "--store", "sqlite://" + filepath.Join(t.TempDir(), "resolutions.db"), "--topic", topic}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(append([]string{"dlq"}, args...), common...)...)
	}

	for range 2 { // listing twice lists the same: nothing was consumed
		code, out, errOut := cli("list")
		require.Equal(t, 0, code, errOut)
		rows := jsonLines(t, out)
		require.Len(t, rows, 3)
		require.Equal(t, idA, rows[0]["id"])
		require.Equal(t, "bad amount", rows[0]["error"])
		require.Equal(t, orig, rows[0]["original_topic"])
		require.Equal(t, "1", rows[0]["position"], "the stream sequence")
	}
	code, out, _ := cli("list", "--reason", dlq.ReasonRetriesExhausted)
	require.Equal(t, 0, code)
	require.Len(t, jsonLines(t, out), 1)

	code, out, errOut := cli("show", idC, "--json")
	require.Equal(t, 0, code, errOut)
	var shown map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &shown))
	require.Equal(t, "AP8=", shown["payload"])
	require.Equal(t, "acme", shown["metadata"].(map[string]any)["tenant"])

	code, out, errOut = cli("replay", "--id", idA)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "replayed 1, parked 0, skipped 0")
	name, err := nats.StreamName(orig)
	require.NoError(t, err)
	st, err := js.Stream(context.Background(), name)
	require.NoError(t, err)
	raw, err := st.GetMsg(context.Background(), 1)
	require.NoError(t, err, "the replay is in the original topic's stream")
	require.Equal(t, `{"amount":-1}`, string(raw.Data))
	require.Equal(t, idA, raw.Header.Get(dlqmeta.KeyReplayID))
	require.Equal(t, "ev-a", raw.Header.Get(wire.NATSUUIDHeader))
	require.Equal(t, "acme", raw.Header.Get("tenant"))
	code, _, errOut = cli("replay", "--id", idA)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "already replayed")

	code, out, _ = cli("purge", "--yes", "--id", idB)
	require.Equal(t, 0, code)
	require.Contains(t, out, "purged 1, skipped 0")
	code, out, _ = cli("list")
	require.Equal(t, 0, code)
	require.Len(t, jsonLines(t, out), 1, "one unresolved entry left")
	code, out, _ = cli("list", "--all")
	require.Equal(t, 0, code)
	got := map[string]string{}
	for _, r := range jsonLines(t, out) {
		res, _ := r["resolution"].(string)
		got[r["id"].(string)] = res
	}
	require.Equal(t, map[string]string{idA: "replayed", idB: "purged", idC: ""}, got)
	require.True(t, strings.HasSuffix(topic, ".dlq"))
}
