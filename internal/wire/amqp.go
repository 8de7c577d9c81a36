package wire

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/idempo/idempo/internal/dlqmeta"
)

// AMQPUUIDHeader is the message header that carries the Watermill message UUID
// (the same header watermill-amqp uses, so both interoperate).
const AMQPUUIDHeader = wamqp.DefaultMessageUUIDHeaderKey

// AMQPMessageIDKey is the metadata field that holds the AMQP message-id property.
// [AMQPMarshaler] fills it on consume (when the property is set) and sends it as
// the message-id property on publish (the message UUID when it is absent), so
// producers that are not Watermill can be deduplicated by message-id with
// amqp.MessageID.
const AMQPMessageIDKey = "amqp_message_id"

// AMQPRedeliveredKey is the metadata field watermill-amqp sets to "true" on a
// delivery RabbitMQ has delivered before (its redelivered flag).
const AMQPRedeliveredKey = wamqp.MetadataRedeliveredKey

// AMQPMarshaler converts between Watermill messages and AMQP messages. It never
// fails, because watermill-amqp requeues a delivery it cannot unmarshal at
// once and forever, before any middleware sees it.
//
// Marshal writes every metadata field as a string header (except
// [AMQPMessageIDKey], which becomes the message-id property, and
// [AMQPRedeliveredKey]), the UUID to [AMQPUUIDHeader], and marks the message
// persistent unless NonDurable.
//
// Unmarshal turns every header into a metadata string: strings as they are,
// byte arrays as text, numbers, booleans and decimals in their usual text
// form, timestamps in RFC 3339, and tables and arrays — such as the x-death
// header a dead-letter exchange adds — as JSON. A header it cannot render is
// rendered as well as it can and reported in "idempo_malformed", which makes
// the idempo middleware dead-letter the message instead of running it.
//
// Marshaler is safe for concurrent use.
type AMQPMarshaler struct {
	// NonDurable publishes transient messages. Defaults to false (persistent).
	NonDurable bool
}

var _ wamqp.Marshaler = AMQPMarshaler{}

// Marshal converts msg into an AMQP publishing. It never returns an error.
func (m AMQPMarshaler) Marshal(msg *message.Message) (amqp091.Publishing, error) {
	headers := make(amqp091.Table, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		switch k {
		case AMQPMessageIDKey, AMQPRedeliveredKey, AMQPUUIDHeader:
			continue
		}
		headers[k] = v
	}
	headers[AMQPUUIDHeader] = msg.UUID
	p := amqp091.Publishing{
		Headers:   headers,
		Body:      msg.Payload,
		MessageId: msg.UUID,
	}
	if id := msg.Metadata.Get(AMQPMessageIDKey); id != "" {
		p.MessageId = id
	}
	if !m.NonDurable {
		p.DeliveryMode = amqp091.Persistent
	}
	return p, nil
}

// Unmarshal converts a delivery into a message. It never returns an error;
// a problem is reported in the message's "idempo_malformed" metadata.
func (AMQPMarshaler) Unmarshal(d amqp091.Delivery) (*message.Message, error) {
	md := make(message.Metadata, len(d.Headers)+1)
	var problems []string
	uuid := ""
	for k, v := range d.Headers {
		s, err := headerText(v)
		if err != nil {
			problems = append(problems, fmt.Sprintf("header %q: %v", k, err))
		}
		if k == AMQPUUIDHeader {
			uuid = s
			continue
		}
		md[k] = s
	}
	if d.MessageId != "" {
		md[AMQPMessageIDKey] = d.MessageId
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		md[dlqmeta.KeyMalformed] = strings.Join(problems, "; ")
	}
	msg := message.NewMessage(uuid, d.Body)
	msg.Metadata = md
	return msg, nil
}

// headerText renders an AMQP field value as text. On error it still returns
// the best rendering it has.
func headerText(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case nil:
		return "", nil
	case []byte:
		return string(x), nil
	case bool:
		return strconv.FormatBool(x), nil
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64, uint:
		return fmt.Sprint(x), nil
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case amqp091.Decimal:
		return decimalText(x), nil
	}
	j, err := json.Marshal(jsonValue(v))
	if err != nil {
		return fmt.Sprint(v), fmt.Errorf("cannot render %T as text: %w", v, err)
	}
	return string(j), nil
}

// jsonValue converts AMQP tables and arrays into values encoding/json
// renders faithfully (byte arrays as text where they are UTF-8).
func jsonValue(v any) any {
	switch x := v.(type) {
	case amqp091.Table:
		return jsonValue(map[string]any(x))
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return x // base64, as encoding/json does
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case amqp091.Decimal:
		return json.Number(decimalText(x))
	default:
		return x
	}
}

func decimalText(d amqp091.Decimal) string {
	r := new(big.Rat).SetFrac(big.NewInt(int64(d.Value)), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(d.Scale)), nil))
	return r.FloatString(int(d.Scale))
}
