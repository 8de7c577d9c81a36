package wire_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

// asRead turns marshalled fields into what go-redis returns: strings.
func asRead(values map[string]any) map[string]any {
	out := make(map[string]any, len(values))
	for k, v := range values {
		switch x := v.(type) {
		case []byte:
			out[k] = string(x)
		default:
			out[k] = x
		}
	}
	return out
}

func TestRedisRoundTrip(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("u-1", []byte("\x00\xffpayload"))
	msg.Metadata.Set("tenant", "acme")
	msg.Metadata.Set(wire.RedisEntryIDKey, "1-1") // not sent: the stream sets it
	got := wire.RedisUnmarshal("5-0", asRead(wire.RedisMarshal(msg)))
	require.Equal(t, "u-1", got.UUID)
	require.Equal(t, msg.Payload, got.Payload)
	require.Equal(t, message.Metadata{"tenant": "acme", wire.RedisIDKey: "u-1", wire.RedisEntryIDKey: "5-0"}, got.Metadata)

	msg.Metadata.Set(wire.RedisIDKey, "order-7")
	got = wire.RedisUnmarshal("6-0", asRead(wire.RedisMarshal(msg)))
	require.Equal(t, "order-7", got.Metadata.Get(wire.RedisIDKey), "the id field comes from the metadata when set")
}

func TestRedisUnmarshalForeign(t *testing.T) {
	t.Parallel()
	got := wire.RedisUnmarshal("1-0", map[string]any{"id": "42", "payload": "p", "type": "order"})
	require.Empty(t, got.UUID)
	require.Equal(t, "p", string(got.Payload))
	require.Equal(t, "42", got.Metadata.Get(wire.RedisIDKey))
	require.Equal(t, "order", got.Metadata.Get("type"))
	require.Empty(t, got.Metadata.Get(dlqmeta.KeyMalformed))

	got = wire.RedisUnmarshal("1-1", map[string]any{"metadata": `{"a":"b"}`})
	require.Equal(t, "b", got.Metadata.Get("a"), "JSON metadata is read too")

	got = wire.RedisUnmarshal("1-2", map[string]any{"metadata": "\xc1", "n": int64(3)})
	require.Contains(t, got.Metadata.Get(dlqmeta.KeyMalformed), `field "metadata"`)
	require.Contains(t, got.Metadata.Get(dlqmeta.KeyMalformed), `field "n"`)
	require.Equal(t, "3", got.Metadata.Get("n"))
}

func FuzzRedisUnmarshal(f *testing.F) {
	f.Add("id", "42", "metadata", "\x81\xa1a\xa1b", "payload")
	f.Add("x", "", "metadata", "{", "")
	f.Add("_watermill_message_uuid", "u", "metadata", "\xc1", "p")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, payload string) {
		values := map[string]any{k1: v1, k2: v2, "payload": payload}
		msg := wire.RedisUnmarshal("9-9", values)
		require.NotNil(t, msg)
		require.Equal(t, "9-9", msg.Metadata.Get(wire.RedisEntryIDKey))
		// What it produced survives a round trip.
		back := wire.RedisUnmarshal("9-9", asRead(wire.RedisMarshal(msg)))
		require.Equal(t, msg.UUID, back.UUID)
		require.Equal(t, string(msg.Payload), string(back.Payload))
	})
}
