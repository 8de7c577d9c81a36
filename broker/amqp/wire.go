package amqp

import (
	"github.com/idempo/idempo/dedup"
)

// MessageIDKey is the metadata field that holds the AMQP message-id
// property. Consuming fills it (when the property is set) and publishing
// sends it as the message-id property (the message UUID when it is absent),
// so producers that are not Watermill can be deduplicated by message-id with
// [MessageID].
const MessageIDKey = "amqp_message_id" // the same as the converter's (tested)

// MessageID extracts the AMQP message-id property (see [MessageIDKey]).
func MessageID() dedup.Extractor {
	return dedup.Metadata(MessageIDKey)
}
