package dedup_test

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup"
)

// Producers that are not Watermill carry the event ID in a header; pick it
// with an extractor, falling back to the CloudEvents id.
func ExampleFirstOf() {
	extract := dedup.FirstOf(dedup.Metadata("event_id"), dedup.CloudEventsID())

	fromKafka := message.NewMessage("random-uuid", nil)
	fromKafka.Metadata.Set("ce_id", "order-7")
	id, err := extract(fromKafka)
	fmt.Println(id, err)

	_, err = extract(message.NewMessage("random-uuid", nil))
	fmt.Println(err)
	// Output:
	// order-7 <nil>
	// dedup: message has no event ID in metadata "event_id", metadata "ce_id", metadata "cloudEvents:id", metadata "cloudEvents_id", metadata "ce-id"
}
