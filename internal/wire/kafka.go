package wire

import (
	"strconv"

	"github.com/IBM/sarama"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/internal/dlqmeta"
)

// KafkaUUIDHeader is the Kafka record header that carries the Watermill message
// UUID (the same header watermill-kafka uses, so both interoperate).
const KafkaUUIDHeader = wkafka.UUIDHeaderKey

// KafkaPartitionKey is the metadata field whose value [KafkaMarshaler] sends as
// the Kafka record key, so that messages with one key land on one partition
// (and keep their order). Without it, a message consumed from Kafka keeps its
// original key through "idempo_original_key"; with neither, the record has no
// key and sarama spreads records over partitions at random.
const KafkaPartitionKey = "partition_key"

// KafkaMarshaler converts between Watermill messages and Kafka records. Neither
// direction ever fails, because watermill-kafka re-reads a record whose
// unmarshalling failed from the same offset forever, before any middleware
// sees it.
//
// Marshal writes the UUID to [KafkaUUIDHeader], every metadata field as a header,
// and the key from [KafkaPartitionKey] (or "idempo_original_key"). A
// metadata field named [KafkaUUIDHeader] is not written (the UUID takes its place).
//
// Unmarshal reads the UUID from [KafkaUUIDHeader] ("" when absent, as for records
// of producers that are not Watermill: extract their event ID from a header
// with dedup.Metadata or dedup.CloudEventsID), every other header into
// metadata (the last one wins when a key repeats), and records where the
// message came from in "idempo_original_partition", "idempo_original_offset" and
// "idempo_original_key" unless the record already carries them (a dead-letter
// copy read back keeps its original's). A record whose UUID header appears
// twice with different values gets "idempo_malformed" instead of an error.
//
// Marshaler is stateless and safe for concurrent use.
type KafkaMarshaler struct{}

var (
	_ wkafka.Marshaler   = KafkaMarshaler{}
	_ wkafka.Unmarshaler = KafkaMarshaler{}
)

// Marshal converts msg into a record for topic. It never returns an error.
func (KafkaMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	headers := make([]sarama.RecordHeader, 0, len(msg.Metadata)+1)
	headers = append(headers, sarama.RecordHeader{Key: []byte(KafkaUUIDHeader), Value: []byte(msg.UUID)})
	for k, v := range msg.Metadata {
		if k == KafkaUUIDHeader {
			continue
		}
		headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	pm := &sarama.ProducerMessage{
		Topic:   topic,
		Value:   sarama.ByteEncoder(msg.Payload),
		Headers: headers,
	}
	if key, ok := partitionKey(msg); ok {
		pm.Key = sarama.StringEncoder(key)
	}
	return pm, nil
}

func partitionKey(msg *message.Message) (string, bool) {
	if k, ok := msg.Metadata[KafkaPartitionKey]; ok {
		return k, true
	}
	k, ok := msg.Metadata[dlqmeta.KeyPartitionKey]
	return k, ok
}

// Unmarshal converts a consumed record into a message. It never returns an
// error; a problem is reported in the message's "idempo_malformed" metadata.
func (KafkaMarshaler) Unmarshal(rec *sarama.ConsumerMessage) (*message.Message, error) {
	md := make(message.Metadata, len(rec.Headers)+3)
	var (
		uuid      string
		seenUUID  bool
		malformed string
	)
	for _, h := range rec.Headers {
		if h == nil {
			continue
		}
		k := string(h.Key)
		if k == KafkaUUIDHeader {
			v := string(h.Value)
			if seenUUID && v != uuid {
				malformed = "header " + KafkaUUIDHeader + " appears twice with different values"
			}
			uuid, seenUUID = v, true
			continue
		}
		md[k] = string(h.Value)
	}
	if _, ok := md[dlqmeta.KeyPartition]; !ok {
		md[dlqmeta.KeyPartition] = strconv.FormatInt(int64(rec.Partition), 10)
		md[dlqmeta.KeyOffset] = strconv.FormatInt(rec.Offset, 10)
		if rec.Key != nil {
			md[dlqmeta.KeyPartitionKey] = string(rec.Key)
		}
	}
	if malformed != "" {
		md[dlqmeta.KeyMalformed] = malformed
	}
	msg := message.NewMessage(uuid, rec.Value)
	msg.Metadata = md
	return msg, nil
}
