package kafka_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

// kcat runs Debian's kcat (librdkafka) with args and stdin, failing the test
// if it is not installed or exits non-zero.
func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	require.NoError(t, err, "kcat is required for the cross-client tests (apt-get install kcat)")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kcat %v: %s", args, out)
	return string(out)
}

// Records produced by librdkafka with CloudEvents headers (one of them
// duplicated) reach the idempo subscriber with the ID extractable, and a
// record with a conflicting UUID header is flagged instead of looping.
func TestKcatProducesIdempoConsumes(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	topic := uniqueName("kcat_in")
	broker := e.Addrs()[0]

	kcat(t, "first\n", "-P", "-b", broker, "-t", topic, "-k", "order-1", "-H", "ce_id=evt-1", "-H", "ce_type=order.created")
	// Two records with the same event ID: a publisher-side duplicate.
	kcat(t, "second\nsecond\n", "-P", "-b", broker, "-t", topic, "-k", "order-2", "-H", "ce_id=evt-2")
	kcat(t, "bad\n", "-P", "-b", broker, "-t", topic,
		"-H", wire.KafkaUUIDHeader+"=a", "-H", wire.KafkaUUIDHeader+"=b", "-H", "ce_id=evt-3")

	sub := newSubscriber(t, e.Config(uniqueName("group")))
	got := receive(t, subscribe(t, sub, topic), 4, time.Minute)

	extract := dedup.CloudEventsID()
	var ids, payloads, keys []string
	for _, m := range got {
		id, err := extract(m)
		require.NoError(t, err)
		ids = append(ids, id)
		payloads = append(payloads, string(m.Payload))
		keys = append(keys, m.Metadata.Get(dlqmeta.KeyPartitionKey))
	}
	require.Equal(t, []string{"evt-1", "evt-2", "evt-2", "evt-3"}, ids)
	require.Equal(t, []string{"first", "second", "second", "bad"}, payloads)
	require.Equal(t, []string{"order-1", "order-2", "order-2", ""}, keys)
	require.Equal(t, "order.created", got[0].Metadata.Get("ce_type"))
	require.Empty(t, got[0].UUID, "kcat sets no Watermill UUID")
	require.Empty(t, got[0].Metadata.Get(dlqmeta.KeyMalformed))
	require.Contains(t, got[3].Metadata.Get(dlqmeta.KeyMalformed), wire.KafkaUUIDHeader)
	require.Equal(t, []string{"0", "1", "2", "3"}, []string{
		got[0].Metadata.Get(dlqmeta.KeyOffset), got[1].Metadata.Get(dlqmeta.KeyOffset),
		got[2].Metadata.Get(dlqmeta.KeyOffset), got[3].Metadata.Get(dlqmeta.KeyOffset),
	})
}

// What the idempo publisher writes is readable by librdkafka: key, headers
// (UUID and metadata) and payload.
func TestIdempoProducesKcatConsumes(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	topic := uniqueName("kcat_out")
	pub := newPublisher(t, e.Config(""))

	msg := message.NewMessage("0b9c7f3e-uuid", []byte("hello"))
	msg.Metadata.Set(kafka.PartitionKeyMetadata, "customer-9")
	msg.Metadata.Set("ce_id", "evt-9")
	require.NoError(t, pub.Publish(topic, msg))

	out := kcat(t, "", "-C", "-b", e.Addrs()[0], "-t", topic, "-o", "beginning", "-c", "1", "-e",
		"-f", "key=%k|headers=%h|payload=%s\n")
	require.Contains(t, out, "key=customer-9|")
	require.Contains(t, out, wire.KafkaUUIDHeader+"=0b9c7f3e-uuid")
	require.Contains(t, out, "ce_id=evt-9")
	require.Contains(t, out, "|payload=hello")
}
