package wire

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/vmihailenco/msgpack"

	"github.com/idempo/idempo/internal/dlqmeta"
)

// Fields of a Redis stream entry written by [RedisMarshal]. The UUID,
// payload and metadata fields are watermill-redisstream's, so either side
// can read the other's entries.
const (
	// RedisUUIDField holds the Watermill message UUID.
	RedisUUIDField = "_watermill_message_uuid"
	// RedisPayloadField holds the payload.
	RedisPayloadField = "payload"
	// RedisMetadataField holds the metadata, msgpack-encoded as
	// watermill-redisstream does (JSON is read too).
	RedisMetadataField = "metadata"
	// RedisIDField is the event ID a producer that is not Watermill sets
	// (redis-cli XADD s '*' id 42 payload ...). Publishing writes it from
	// [RedisIDKey], or the message UUID.
	RedisIDField = "id"
)

// Metadata keys filled by [RedisUnmarshal] and the subscriber.
const (
	// RedisIDKey holds the entry's id field.
	RedisIDKey = "redisstream_id"
	// RedisEntryIDKey holds the stream entry ID (1700000000000-0).
	RedisEntryIDKey = "redisstream_entry_id"
	// RedisDeliveryCountKey holds the consumer group's delivery count of
	// the entry (1 on the first delivery).
	RedisDeliveryCountKey = "redisstream_delivery_count"
)

// RedisMarshal returns the fields of the stream entry for msg. It never
// fails.
func RedisMarshal(msg *message.Message) map[string]any {
	md := make(map[string]string, len(msg.Metadata))
	for k, v := range msg.Metadata {
		switch k {
		case RedisIDKey, RedisEntryIDKey, RedisDeliveryCountKey, RedisUUIDField:
			continue
		}
		md[k] = v
	}
	values := map[string]any{
		RedisUUIDField:    msg.UUID,
		RedisPayloadField: []byte(msg.Payload),
		RedisIDField:      msg.UUID,
	}
	if id := msg.Metadata.Get(RedisIDKey); id != "" {
		values[RedisIDField] = id
	}
	if len(md) > 0 {
		b, err := msgpack.Marshal(md)
		if err != nil { // a map of strings always encodes; JSON as a fallback
			b, _ = json.Marshal(md)
		}
		values[RedisMetadataField] = b
	}
	return values
}

// RedisUnmarshal turns a stream entry's fields into a message. It never
// fails: the UUID, payload and metadata fields are read as
// [RedisMarshal] writes them, the id field goes to [RedisIDKey], any other
// field to the metadata key of its name (unless the metadata field already
// set it), and the entry ID to [RedisEntryIDKey]. A metadata field that is
// neither msgpack nor JSON, or a field that is not text, is reported in
// dlqmeta.KeyMalformed.
func RedisUnmarshal(entryID string, values map[string]any) *message.Message {
	var problems []string
	text := func(name string, v any) string {
		switch x := v.(type) {
		case string:
			return x
		case []byte:
			return string(x)
		case nil:
			return ""
		default:
			problems = append(problems, fmt.Sprintf("field %q: %T is not text", name, v))
			return fmt.Sprint(v)
		}
	}
	md := make(message.Metadata, len(values)+2)
	if raw, ok := values[RedisMetadataField]; ok {
		s := text(RedisMetadataField, raw)
		if s != "" {
			var m map[string]string
			if err := msgpack.Unmarshal([]byte(s), &m); err != nil {
				if jerr := json.Unmarshal([]byte(s), &m); jerr != nil {
					problems = append(problems, fmt.Sprintf("field %q is neither msgpack nor JSON: %v", RedisMetadataField, err))
				}
			}
			for k, v := range m {
				md[k] = v
			}
		}
	}
	uuid := ""
	var payload []byte
	for k, v := range values {
		switch k {
		case RedisMetadataField:
		case RedisUUIDField:
			uuid = text(k, v)
		case RedisPayloadField:
			payload = []byte(text(k, v))
		case RedisIDField:
			md[RedisIDKey] = text(k, v)
		default:
			s := text(k, v)
			if _, set := md[k]; !set {
				md[k] = s
			}
		}
	}
	md[RedisEntryIDKey] = entryID
	if len(problems) > 0 {
		slices.Sort(problems)
		md[dlqmeta.KeyMalformed] = strings.Join(problems, "; ")
	}
	msg := message.NewMessage(uuid, payload)
	msg.Metadata = md
	return msg
}
