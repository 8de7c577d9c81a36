package redisstream

import (
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/internal/wire"
)

// Metadata keys the subscriber fills.
const (
	// MessageIDKey holds the entry's id field: the event ID of a producer
	// that is not Watermill (redis-cli XADD s '*' id 42 payload …). Publish
	// writes the id field from this key, or from the message UUID, so
	// [MessageID] works for every entry.
	MessageIDKey = wire.RedisIDKey
	// EntryIDKey holds the stream entry ID (1700000000000-0).
	EntryIDKey = wire.RedisEntryIDKey
	// DeliveryCountKey holds the consumer group's delivery count of the
	// entry: 1 on the first delivery, one more for each claim and each
	// redelivery after a nack.
	DeliveryCountKey = wire.RedisDeliveryCountKey
)

// MessageID extracts the entry's id field (see [MessageIDKey]).
func MessageID() dedup.Extractor {
	return dedup.Metadata(MessageIDKey)
}
