package dlq

// Reason values: why a message was dead-lettered, in [Failure.Reason] and
// in the copy's idempo_reason header.
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
	// 256 bytes, the copy's idempo_event_id holds it shortened (see
	// docs/dlq.md).
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
