package wire_test

import (
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

func TestKafkaMarshalerRoundTrip(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("uuid-1", []byte("payload"))
	msg.Metadata.Set("ce_id", "event-1")
	msg.Metadata.Set(wire.KafkaPartitionKey, "customer-7")
	msg.Metadata.Set(wire.KafkaUUIDHeader, "ignored: the UUID wins")

	pm, err := wire.KafkaMarshaler{}.Marshal("orders", msg)
	require.NoError(t, err)
	key, err := pm.Key.Encode()
	require.NoError(t, err)
	require.Equal(t, "customer-7", string(key))

	rec := toConsumerMessage(t, pm, 3, 42)
	got, err := wire.KafkaMarshaler{}.Unmarshal(rec)
	require.NoError(t, err)
	require.Equal(t, "uuid-1", got.UUID)
	require.Equal(t, "payload", string(got.Payload))
	require.Equal(t, "event-1", got.Metadata.Get("ce_id"))
	require.Equal(t, "3", got.Metadata.Get(dlqmeta.KeyPartition))
	require.Equal(t, "42", got.Metadata.Get(dlqmeta.KeyOffset))
	require.Equal(t, "customer-7", got.Metadata.Get(dlqmeta.KeyPartitionKey))
	require.Empty(t, got.Metadata.Get(dlqmeta.KeyMalformed))
	require.NotContains(t, got.Metadata, wire.KafkaUUIDHeader)
}

// A dead-letter copy keeps the original's partition, offset and key, both
// when it is published (the key) and when it is read back (the metadata).
func TestKafkaMarshalerKeepsOriginalPosition(t *testing.T) {
	t.Parallel()
	original, err := wire.KafkaMarshaler{}.Unmarshal(&sarama.ConsumerMessage{
		Key: []byte("k1"), Value: []byte("v"), Partition: 2, Offset: 9,
	})
	require.NoError(t, err)
	require.Empty(t, original.UUID, "a record without the UUID header has no UUID")

	copyMsg := original.Copy()
	copyMsg.UUID = "dlq-entry"
	pm, err := wire.KafkaMarshaler{}.Marshal("orders.dlq", copyMsg)
	require.NoError(t, err)
	key, err := pm.Key.Encode()
	require.NoError(t, err)
	require.Equal(t, "k1", string(key), "the copy is keyed like the original")

	readBack, err := wire.KafkaMarshaler{}.Unmarshal(toConsumerMessage(t, pm, 0, 100))
	require.NoError(t, err)
	require.Equal(t, "2", readBack.Metadata.Get(dlqmeta.KeyPartition))
	require.Equal(t, "9", readBack.Metadata.Get(dlqmeta.KeyOffset))
	require.Equal(t, "k1", readBack.Metadata.Get(dlqmeta.KeyPartitionKey))
}

func TestKafkaMarshalerNeverFails(t *testing.T) {
	t.Parallel()
	cases := map[string]*sarama.ConsumerMessage{
		"empty":      {},
		"nil header": {Headers: []*sarama.RecordHeader{nil}},
		"binary":     {Key: []byte{0xff, 0x00}, Value: []byte{0xfe}, Headers: []*sarama.RecordHeader{{Key: []byte("h"), Value: []byte{0xff}}}},
		"conflicting UUIDs": {Headers: []*sarama.RecordHeader{
			{Key: []byte(wire.KafkaUUIDHeader), Value: []byte("a")},
			{Key: []byte(wire.KafkaUUIDHeader), Value: []byte("b")},
		}},
	}
	for name, rec := range cases {
		msg, err := wire.KafkaMarshaler{}.Unmarshal(rec)
		require.NoError(t, err, name)
		require.NotNil(t, msg, name)
		if name == "conflicting UUIDs" {
			require.Contains(t, msg.Metadata.Get(dlqmeta.KeyMalformed), "appears twice", name)
		} else {
			require.Empty(t, msg.Metadata.Get(dlqmeta.KeyMalformed), name)
		}
	}

	_, err := wire.KafkaMarshaler{}.Marshal("t", message.NewMessage("", nil))
	require.NoError(t, err)
}

func toConsumerMessage(t *testing.T, pm *sarama.ProducerMessage, partition int32, offset int64) *sarama.ConsumerMessage {
	t.Helper()
	rec := &sarama.ConsumerMessage{Topic: pm.Topic, Partition: partition, Offset: offset}
	if pm.Key != nil {
		k, err := pm.Key.Encode()
		require.NoError(t, err)
		rec.Key = k
	}
	v, err := pm.Value.Encode()
	require.NoError(t, err)
	rec.Value = v
	for _, h := range pm.Headers {
		rec.Headers = append(rec.Headers, &sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return rec
}
