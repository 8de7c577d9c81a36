package dedup

import (
	"crypto/sha256"
	"errors"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Extractor returns a message's event ID. It returns an error matching
// [ErrMissingEventID] when the message carries none. Extractors must be safe
// for concurrent use and must not modify the message.
type Extractor func(msg *message.Message) (string, error)

// UUID extracts the Watermill message UUID. It is the default extractor.
// Messages from producers that are not Watermill often carry no UUID (or a
// fresh one per delivery); use [Metadata] or [CloudEventsID] for those.
func UUID() Extractor {
	return func(msg *message.Message) (string, error) {
		if msg.UUID == "" {
			return "", &missingIDError{Where: "the message UUID"}
		}
		return msg.UUID, nil
	}
}

// Metadata extracts the value of one metadata field, e.g. the `id` header of
// Debezium's outbox event router. It panics if field is empty.
func Metadata(field string) Extractor {
	if field == "" {
		panic("dedup.Metadata: empty field name")
	}
	where := `metadata "` + field + `"`
	return func(msg *message.Message) (string, error) {
		if v := msg.Metadata.Get(field); v != "" {
			return v, nil
		}
		return "", &missingIDError{Where: where}
	}
}

// CloudEvents metadata keys, as each protocol binding carries the `id` attribute.
const (
	// cloudEventsIDKafka is the Kafka binding's header, also used by HTTP as ce-id.
	cloudEventsIDKafka = "ce_id"
	// cloudEventsIDAMQP is the AMQP binding's application property.
	cloudEventsIDAMQP = "cloudEvents:id"
	// cloudEventsIDAMQPUnderscore is the AMQP binding's alternative spelling
	// for brokers that reject ':' in property names.
	cloudEventsIDAMQPUnderscore = "cloudEvents_id"
)

// CloudEventsID extracts the CloudEvents `id` attribute as any binding carries
// it: `ce_id` (Kafka), `cloudEvents:id` or `cloudEvents_id` (AMQP), `ce-id` (HTTP).
func CloudEventsID() Extractor {
	return FirstOf(
		Metadata(cloudEventsIDKafka),
		Metadata(cloudEventsIDAMQP),
		Metadata(cloudEventsIDAMQPUnderscore),
		Metadata("ce-id"),
	)
}

// FirstOf tries each extractor in order and returns the first ID found.
// An error that is not a missing ID stops the search and is returned.
func FirstOf(extractors ...Extractor) Extractor {
	return func(msg *message.Message) (string, error) {
		var places []string
		for _, ex := range extractors {
			id, err := ex(msg)
			if err == nil {
				return id, nil
			}
			var missing *missingIDError
			if !asMissing(err, &missing) {
				return "", err
			}
			places = append(places, missing.Where)
		}
		return "", &missingIDError{Where: strings.Join(places, ", ")}
	}
}

func asMissing(err error, target **missingIDError) bool {
	if errors.As(err, target) {
		return true
	}
	if errors.Is(err, ErrMissingEventID) {
		*target = &missingIDError{Where: err.Error()}
		return true
	}
	return false
}

// Fingerprint returns the SHA-256 digest of a message's payload. With
// fingerprints on, the middleware dead-letters a message whose ID was already
// seen with another payload (reason id_collision).
func Fingerprint(msg *message.Message) []byte {
	sum := sha256.Sum256(msg.Payload)
	return sum[:]
}
