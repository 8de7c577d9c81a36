package nats

import (
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/internal/wire"
)

// MsgIDKey is the metadata field that holds the Nats-Msg-Id header of a
// message a producer that is not Watermill published (one whose Nats-Msg-Id
// is not its Watermill UUID). Publishing sends it as Nats-Msg-Id (the
// message UUID when it is absent), so JetStream's duplicate window drops a
// publisher's retries, and [MessageID] extracts it.
const MsgIDKey = wire.NATSMsgIDKey

// NumDeliveredKey is the metadata field that holds JetStream's delivery
// count of a consumed message ("1" on the first delivery). It is the
// server's figure: nats-server 2.9 takes back the count of a delivery made
// to a pull request that had just expired, so it can repeat a number. The
// idempo stack counts deliveries in its store and does not rely on it.
const NumDeliveredKey = wire.NATSNumDeliveredKey

// StreamSeqKey is the metadata field that holds a consumed message's stream
// sequence.
const StreamSeqKey = wire.NATSStreamSeqKey

// UUIDHeader is the header that carries the Watermill UUID, as with
// watermill-nats.
const UUIDHeader = wire.NATSUUIDHeader

// MessageID extracts a message's Nats-Msg-Id: [MsgIDKey] when a producer that
// is not Watermill set it, else the Watermill UUID. Give it to
// middleware.Config.Extractor on topics that foreign producers publish to
// (nats pub -H Nats-Msg-Id:order-1 …).
func MessageID() dedup.Extractor {
	return dedup.FirstOf(dedup.Metadata(MsgIDKey), dedup.UUID())
}
