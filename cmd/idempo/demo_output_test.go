package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/IBM/sarama"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka/embedded"
	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/cmd/idempo/internal/verify"
)

// jsonKeys returns the keys of the JSON object v encodes to.
func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// requireRows checks that text has a ledger row named after each key.
func requireRows(t *testing.T, text string, keys []string) {
	t.Helper()
	for _, k := range keys {
		require.Regexp(t, regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(k)+` `), text, "the text ledger shows the JSON field %q", k)
	}
}

// The text ledger of demo shows every field its JSON has.
func TestDemoTextShowsEveryJSONField(t *testing.T) {
	code, out, errOut := runCLI(t, "demo", "--json", "--events", "200", "--store", "memory")
	require.Equal(t, 0, code, errOut)
	var l map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &l))
	require.Regexp(t, `^idempo-demo-[0-9a-f]{8}\.dlq$`, l["dlq_topic"], "the DLQ is named on every broker")
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	code, text, errOut := runCLI(t, "demo", "--events", "200", "--store", "memory")
	require.Equal(t, 0, code, errOut)
	requireRows(t, text, keys)
	requireRows(t, text, jsonKeys(t, demo.Ledger{}))
}

// The same for verify's result (printed without a run: verify runs are long).
func TestVerifyTextShowsEveryJSONField(t *testing.T) {
	res := verify.Result{Ledger: demo.Ledger{RunID: "r", DLQTopic: "idempo-verify-r.dlq"}, GuaranteeLevel: "g"}
	var buf bytes.Buffer
	verifyText(res, "kept").text(&buf)
	requireRows(t, buf.String(), jsonKeys(t, res))
}

// queueExists reports whether RabbitMQ has the queue.
func queueExists(t *testing.T, conn *amqp091.Connection, name string) bool {
	t.Helper()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer func() { _ = ch.Close() }()
	_, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
	var aerr *amqp091.Error
	if errors.As(err, &aerr) && aerr.Code == amqp091.NotFound {
		return false
	}
	require.NoError(t, err)
	return true
}

// The RabbitMQ demo names its DLQ and removes its two queues at the end;
// --keep keeps both.
func TestDemoRabbitMQNamesItsDLQAndCleansUp(t *testing.T) {
	conn, err := amqp091.Dial(rabbitURL)
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	for _, keep := range []bool{false, true} {
		args := []string{"demo", "--json", "--events", "300", "--broker", rabbitURL, "--store", "memory"}
		if keep {
			args = append(args, "--keep")
		}
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 0, code, errOut)
		var l demo.Ledger
		require.NoError(t, json.Unmarshal([]byte(out), &l))
		require.Equal(t, demo.DLQTopic(l.RunID), l.DLQTopic)
		require.Contains(t, errOut, "DLQ "+l.DLQTopic, "the start line names the DLQ")
		for _, q := range []string{demo.Topic(l.RunID), l.DLQTopic} {
			require.Equal(t, keep, queueExists(t, conn, q), "queue %s with --keep=%v", q, keep)
			if keep {
				ch, err := conn.Channel()
				require.NoError(t, err)
				_, err = ch.QueueDelete(q, false, false, false)
				require.NoError(t, err)
				_ = ch.Close()
			}
		}
	}
	code, out, errOut := runCLI(t, "demo", "--events", "100", "--broker", rabbitURL, "--store", "memory")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^  dlq_topic +idempo-demo-[0-9a-f]{8}\.dlq  \(deleted at the end; --keep keeps it\)$`, out)
}

// A demo on Redis removes its keys at the end; --keep keeps them.
func TestDemoRedisRemovesItsKeys(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer func() { _ = client.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, keep := range []bool{false, true} {
		args := []string{"demo", "--json", "--events", "200", "--store", "redis://127.0.0.1:6379/0"}
		if keep {
			args = append(args, "--keep")
		}
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 0, code, errOut)
		var l demo.Ledger
		require.NoError(t, json.Unmarshal([]byte(out), &l))
		keys, err := client.Keys(ctx, "idempo:"+l.RunID+":*").Result()
		require.NoError(t, err)
		if keep {
			require.NotEmpty(t, keys, "--keep keeps the dedup records")
			require.NoError(t, client.Del(ctx, keys...).Err())
		} else {
			require.Zero(t, len(keys), "the run's dedup records are removed")
		}
	}
}

// A demo on an external Kafka cluster deletes its two topics at the end;
// --keep keeps them. (The embedded cluster here plays the external one.)
func TestDemoKafkaDeletesItsTopics(t *testing.T) {
	emb, err := embedded.Start(embedded.Config{})
	require.NoError(t, err)
	defer emb.Close()
	admin, err := sarama.NewClusterAdmin(emb.Config("").Brokers, sarama.NewConfig())
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	for _, keep := range []bool{false, true} {
		args := []string{"demo", "--json", "--events", "300", "--broker", emb.URL(), "--store", "memory"}
		if keep {
			args = append(args, "--keep")
		}
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 0, code, errOut)
		var l demo.Ledger
		require.NoError(t, json.Unmarshal([]byte(out), &l))
		topics, err := admin.ListTopics()
		require.NoError(t, err)
		for _, name := range []string{demo.Topic(l.RunID), l.DLQTopic} {
			_, exists := topics[name]
			require.Equal(t, keep, exists, "topic %s with --keep=%v", name, keep)
		}
	}
}

// demo --outbox on the embedded default: exit 0, the outbox fields in the
// JSON and every one of them in the text ledger; a store that is not SQL
// is refused before anything starts.
func TestDemoOutbox(t *testing.T) {
	code, out, errOut := runCLI(t, "demo", "--outbox", "--json", "--events", "300")
	require.Equal(t, 0, code, errOut)
	var l map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &l))
	for _, k := range []string{"lost", "double_effects", "phantom_effects"} {
		require.Contains(t, l, k)
		require.EqualValues(t, 0, l[k], k)
	}
	require.Positive(t, l["rolled_back"])
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	code, text, errOut := runCLI(t, "demo", "--outbox", "--events", "300")
	require.Equal(t, 0, code, errOut)
	requireRows(t, text, keys)

	code, _, errOut = runCLI(t, "demo", "--outbox", "--store", "memory")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--outbox needs a SQL --store")
}
