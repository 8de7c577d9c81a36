package wire_test

import (
	"math"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

func TestAMQPMarshalerRoundTrip(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("uuid-1", []byte("body"))
	msg.Metadata.Set("cloudEvents:id", "evt-1")
	msg.Metadata.Set(wire.AMQPRedeliveredKey, "true")

	p, err := wire.AMQPMarshaler{}.Marshal(msg)
	require.NoError(t, err)
	require.Equal(t, amqp091.Persistent, p.DeliveryMode)
	require.Equal(t, "uuid-1", p.MessageId)
	require.NotContains(t, p.Headers, wire.AMQPRedeliveredKey)

	got, err := wire.AMQPMarshaler{}.Unmarshal(amqp091.Delivery{Headers: p.Headers, Body: p.Body, MessageId: p.MessageId})
	require.NoError(t, err)
	require.Equal(t, "uuid-1", got.UUID)
	require.Equal(t, "evt-1", got.Metadata.Get("cloudEvents:id"))
	require.Equal(t, "uuid-1", got.Metadata.Get(wire.AMQPMessageIDKey))
	require.Empty(t, got.Metadata.Get(dlqmeta.KeyMalformed))

	id, err := dedup.Metadata(wire.AMQPMessageIDKey)(got)
	require.NoError(t, err)
	require.Equal(t, "uuid-1", id)

	// A message-id from metadata (e.g. a dead-letter copy) is kept.
	got.UUID = "dlq-copy"
	p, err = wire.AMQPMarshaler{NonDurable: true}.Marshal(got)
	require.NoError(t, err)
	require.Equal(t, "uuid-1", p.MessageId)
	require.Equal(t, uint8(0), p.DeliveryMode)
}

func TestAMQPUnmarshalNeverFails(t *testing.T) {
	t.Parallel()
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	d := amqp091.Delivery{
		MessageId: "mid-1",
		Headers: amqp091.Table{
			wire.AMQPUUIDHeader: []byte("uuid-bytes"),
			"count":             int32(3),
			"big":               int64(1) << 40,
			"flag":              true,
			"ratio":             1.5,
			"when":              when,
			"price":             amqp091.Decimal{Scale: 2, Value: 1234},
			"nothing":           nil,
			"x-death": []any{amqp091.Table{
				"count": int64(1), "reason": "rejected", "queue": "orders",
				"time": when, "routing-keys": []any{"orders"},
			}},
		},
	}
	msg, err := wire.AMQPMarshaler{}.Unmarshal(d)
	require.NoError(t, err)
	require.Equal(t, "uuid-bytes", msg.UUID)
	require.Equal(t, "3", msg.Metadata.Get("count"))
	require.Equal(t, "1099511627776", msg.Metadata.Get("big"))
	require.Equal(t, "true", msg.Metadata.Get("flag"))
	require.Equal(t, "1.5", msg.Metadata.Get("ratio"))
	require.Equal(t, "2024-05-06T07:08:09Z", msg.Metadata.Get("when"))
	require.Equal(t, "12.34", msg.Metadata.Get("price"))
	require.Equal(t, "", msg.Metadata.Get("nothing"))
	require.JSONEq(t,
		`[{"count":1,"reason":"rejected","queue":"orders","time":"2024-05-06T07:08:09Z","routing-keys":["orders"]}]`,
		msg.Metadata.Get("x-death"))
	require.Equal(t, "mid-1", msg.Metadata.Get(wire.AMQPMessageIDKey))
	require.Empty(t, msg.Metadata.Get(dlqmeta.KeyMalformed))

	// A value JSON cannot carry is rendered anyway and flagged.
	msg, err = wire.AMQPMarshaler{}.Unmarshal(amqp091.Delivery{Headers: amqp091.Table{
		"weird": []any{math.NaN()},
	}})
	require.NoError(t, err)
	require.Contains(t, msg.Metadata.Get(dlqmeta.KeyMalformed), `header "weird"`)
	require.NotEmpty(t, msg.Metadata.Get("weird"))

	msg, err = wire.AMQPMarshaler{}.Unmarshal(amqp091.Delivery{})
	require.NoError(t, err)
	require.Empty(t, msg.UUID)
	require.Empty(t, msg.Metadata)
}
