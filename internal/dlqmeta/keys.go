package dlqmeta

// Metadata keys idempo sets on a dead-letter copy, next to the original
// message's own metadata (which is preserved unchanged, as is the payload).
// All of them but KeyTraceParent start with "idempo_"; a user's own key of
// the same name is overwritten on the copy. docs/dlq.md documents each.
const (
	// KeyEntryID is the DLQ entry ID, also the copy's UUID (see [EntryID]).
	KeyEntryID = "idempo_dlq_entry_id"
	// KeyOriginalUUID is the Watermill UUID of the original message.
	KeyOriginalUUID = "idempo_original_uuid"
	// KeyOriginalTopic is the topic (or queue) the original was consumed from.
	KeyOriginalTopic = "idempo_original_topic"
	// KeyHandler is the name of the router handler that failed.
	KeyHandler = "idempo_handler"
	// KeyScope is the dedup scope of the handler (usually its name).
	KeyScope = "idempo_scope"
	// KeyEventID is the event ID the dedup layer extracted ("" when
	// missing), shortened by [ShortEventID].
	KeyEventID = "idempo_event_id"
	// KeyReason is why the message was dead-lettered: one of dlq's Reason values.
	KeyReason = "idempo_reason"
	// KeyError is the last error's message, truncated to [MaxErrorLen] bytes.
	KeyError = "idempo_error"
	// KeyErrorClass is the class of the last error: "permanent", "retryable",
	// "panic" or "" when no handler ran.
	KeyErrorClass = "idempo_error_class"
	// KeyAttempts is the number of handler attempts in the final delivery.
	KeyAttempts = "idempo_attempts"
	// KeyDeliveries is the store's delivery counter at dead-lettering time.
	KeyDeliveries = "idempo_deliveries"
	// KeyFirstFailure is the time of the first failed attempt, RFC 3339 with
	// nanoseconds, UTC.
	KeyFirstFailure = "idempo_first_failure"
	// KeyLastFailure is the time of the last failed attempt, as KeyFirstFailure.
	KeyLastFailure = "idempo_last_failure"
	// KeyDeadLetteredAt is when the copy was published, as KeyFirstFailure.
	KeyDeadLetteredAt = "idempo_dead_lettered_at"
	// KeyPanicStack is the goroutine stack of a handler panic, truncated to
	// [MaxStackLen] bytes; absent when no attempt panicked.
	KeyPanicStack = "idempo_panic_stack"
	// KeyReplays counts how many times this event was replayed from the DLQ.
	KeyReplays = "idempo_replays"
	// KeyReplayID marks a message republished from the DLQ; its value admits
	// one new claim of a dead-lettered event (see dedup.ClaimRequest.ReplayID).
	KeyReplayID = "idempo_replay_id"
	// KeyPartition and KeyOffset carry the original Kafka partition and offset
	// when the backend knows them; KeyPartitionKey the original message key.
	KeyPartition    = "idempo_original_partition"
	KeyOffset       = "idempo_original_offset"
	KeyPartitionKey = "idempo_original_key"
	// KeyTraceParent is the W3C traceparent of the failed processing span.
	KeyTraceParent = "traceparent"

	// KeyMalformed is set by a backend's unmarshaler on a message it could not
	// decode (e.g. non-string AMQP headers) instead of failing, which would make
	// the adapter redeliver it forever. Its value describes the problem. The
	// middleware dead-letters such a message with reason "malformed" without
	// running the handler.
	KeyMalformed = "idempo_malformed"
)

// MaxErrorLen bounds [KeyError] on the copy.
const MaxErrorLen = 4 << 10

// MaxStackLen bounds [KeyPanicStack] on the copy.
const MaxStackLen = 16 << 10

// MaxEventIDMetadata is the longest event ID a dead-letter copy carries in
// [KeyEventID] whole; a longer one is shortened by [ShortEventID].
const MaxEventIDMetadata = 256
