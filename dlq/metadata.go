package dlq

import "github.com/idempo/idempo/internal/dlqmeta"

// Metadata keys idempo sets on a dead-letter copy, next to the original
// message's own metadata (which is preserved unchanged, as is the payload).
// All of them start with "idempo_"; a user's own key of the same name is
// overwritten on the copy.
const (
	// KeyEntryID is the DLQ entry ID, also the copy's UUID: a UUID derived
	// from the scope, the event ID (else the message UUID, else the original's
	// Kafka position) and the replay count, so that a copy published twice (a
	// DLQ publish whose confirmation was lost) has one entry ID; a random UUID
	// for a message with none of those (see [Router.Copy]).
	KeyEntryID = dlqmeta.KeyEntryID
	// KeyOriginalUUID is the Watermill UUID of the original message.
	KeyOriginalUUID = dlqmeta.KeyOriginalUUID
	// KeyOriginalTopic is the topic (or queue) the original was consumed from.
	KeyOriginalTopic = dlqmeta.KeyOriginalTopic
	// KeyHandler is the name of the router handler that failed.
	KeyHandler = dlqmeta.KeyHandler
	// KeyScope is the dedup scope of the handler (usually its name).
	KeyScope = dlqmeta.KeyScope
	// KeyEventID is the event ID the dedup layer extracted ("" when missing).
	KeyEventID = dlqmeta.KeyEventID
	// KeyReason is why the message was dead-lettered: one of the Reason values.
	KeyReason = dlqmeta.KeyReason
	// KeyError is the last error's message, truncated to [MaxErrorLen] bytes.
	KeyError = dlqmeta.KeyError
	// KeyErrorClass is the class of the last error: "permanent", "retryable",
	// "panic" or "" when no handler ran.
	KeyErrorClass = dlqmeta.KeyErrorClass
	// KeyAttempts is the number of handler attempts in the final delivery.
	KeyAttempts = dlqmeta.KeyAttempts
	// KeyDeliveries is the store's delivery counter at dead-lettering time.
	KeyDeliveries = dlqmeta.KeyDeliveries
	// KeyFirstFailure is the time of the first failed attempt, RFC 3339 with
	// nanoseconds, UTC.
	KeyFirstFailure = dlqmeta.KeyFirstFailure
	// KeyLastFailure is the time of the last failed attempt, as KeyFirstFailure.
	KeyLastFailure = dlqmeta.KeyLastFailure
	// KeyDeadLetteredAt is when the copy was published, as KeyFirstFailure.
	KeyDeadLetteredAt = dlqmeta.KeyDeadLetteredAt
	// KeyPanicStack is the goroutine stack of a handler panic, truncated to
	// [MaxStackLen] bytes; absent when no attempt panicked.
	KeyPanicStack = dlqmeta.KeyPanicStack
	// KeyReplays counts how many times this event was replayed from the DLQ.
	KeyReplays = dlqmeta.KeyReplays
	// KeyReplayID marks a message republished from the DLQ; its value admits
	// one new claim of a dead-lettered event (see dedup.ClaimRequest.ReplayID).
	KeyReplayID = dlqmeta.KeyReplayID
	// KeyPartition and KeyOffset carry the original Kafka partition and offset
	// when the backend knows them; KeyPartitionKey the original message key.
	KeyPartition    = dlqmeta.KeyPartition
	KeyOffset       = dlqmeta.KeyOffset
	KeyPartitionKey = dlqmeta.KeyPartitionKey
	// KeyTraceParent is the W3C traceparent of the failed processing span.
	KeyTraceParent = dlqmeta.KeyTraceParent

	// KeyMalformed is set by a backend's unmarshaler on a message it could not
	// decode (e.g. non-string AMQP headers) instead of failing, which would make
	// the adapter redeliver it forever. Its value describes the problem. The
	// middleware dead-letters such a message with ReasonMalformed without
	// running the handler.
	KeyMalformed = dlqmeta.KeyMalformed
)

// Reason values for [KeyReason].
const (
	// ReasonPermanent: the handler returned a permanent error.
	ReasonPermanent = "permanent_error"
	// ReasonRetriesExhausted: every in-process attempt failed with a retryable error.
	ReasonRetriesExhausted = "retries_exhausted"
	// ReasonDeliveryCap: the store's delivery counter passed the cap (e.g. the
	// message crashed its consumer again and again).
	ReasonDeliveryCap = "delivery_cap"
	// ReasonMissingEventID: no event ID could be extracted (absent or empty).
	ReasonMissingEventID = "missing_event_id"
	// ReasonInvalidEventID: an event ID was found but cannot be stored (longer
	// than dedup.MaxIDLen, 4096 bytes). Like every ID over
	// [MaxEventIDMetadata], the copy's idempo_event_id holds it shortened by
	// [ShortEventID].
	ReasonInvalidEventID = "invalid_event_id"
	// ReasonInvalidScope: the dedup scope (the router handler's name unless
	// middleware.Config.Scope is set) cannot be stored: longer than 255
	// bytes, not UTF-8, or with a NUL. Every message of that handler is
	// dead-lettered so until Config.Scope names the consumer.
	ReasonInvalidScope = "invalid_scope"
	// ReasonIDCollision: the event ID was seen before with another payload.
	ReasonIDCollision = "id_collision"
	// ReasonMalformed: the backend could not decode the message.
	ReasonMalformed = "malformed"
)

// MaxErrorLen bounds [KeyError] on the copy.
const MaxErrorLen = dlqmeta.MaxErrorLen

// MaxStackLen bounds [KeyPanicStack] on the copy.
const MaxStackLen = dlqmeta.MaxStackLen

// MaxEventIDMetadata is the longest event ID a dead-letter copy carries in
// [KeyEventID] whole; a longer one is shortened by [ShortEventID].
const MaxEventIDMetadata = dlqmeta.MaxEventIDMetadata

// ShortEventID returns id shortened as a copy carries it.
func ShortEventID(id string) string { return dlqmeta.ShortEventID(id) }
