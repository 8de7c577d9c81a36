package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"

	"github.com/idempo/idempo/internal/dlqmeta"
)

// NATSUUIDHeader is the message header that carries the Watermill message
// UUID (the same header watermill-nats uses, so both interoperate).
const NATSUUIDHeader = wmnats.WatermillUUIDHdr

// NATSMsgIDKey is the metadata field that holds a message's event ID for
// JetStream's duplicate window: Unmarshal fills it from the Nats-Msg-Id
// header of a message whose Nats-Msg-Id is not its Watermill UUID (a
// producer that is not Watermill), and Marshal sends it as Nats-Msg-Id.
const NATSMsgIDKey = "nats_msg_id"

// NATSNumDeliveredKey is the metadata field that holds JetStream's delivery
// count of a consumed message (1 on the first delivery).
const NATSNumDeliveredKey = "nats_num_delivered"

// NATSStreamSeqKey is the metadata field that holds the stream sequence of a
// consumed message.
const NATSStreamSeqKey = "nats_stream_seq"

// NATSEncodedPrefix starts the header name under which a metadata field is
// sent whose name is not a valid header name or whose value would not survive
// a NATS header line (line breaks, leading or trailing blanks, invalid
// UTF-8): the rest of the name is the field's name in unpadded URL-safe
// base64, the value is the field's value in standard base64.
const NATSEncodedPrefix = "Idempo-Enc-"

// natsIDSep separates the event ID from what tells a deliberate republish
// of one event apart in its Nats-Msg-Id (a replay's ID, a delay tier), so
// that JetStream's duplicate window does not drop a replay or a message
// coming back from a delay tier moments after the original.
const natsIDSep = "|idempo:"

// natsTierKey is the stack's delay-tier metadata field (middleware's
// Redelivery): a message returning from a tier keeps its UUID.
const natsTierKey = "idempo_redelivery_tier"

// NATSMsgID returns the Nats-Msg-Id header Marshal sends for msg: the
// dead-letter copy's UUID (its entry ID) for a copy, else [NATSMsgIDKey] or
// the UUID, followed, for a replayed message or one returning from a delay
// tier, by "|idempo:" and the replay's ID and the tier. "" when the message
// has neither (JetStream then deduplicates nothing). A publisher's retry of
// one message sends the same ID; a deliberate republish another.
func NATSMsgID(msg *message.Message) string {
	id := msg.Metadata.Get(NATSMsgIDKey)
	if id == "" || msg.Metadata.Get(dlqmeta.KeyEntryID) != "" {
		id = msg.UUID
	}
	if id == "" {
		return ""
	}
	rid, tier := msg.Metadata.Get(dlqmeta.KeyReplayID), msg.Metadata.Get(natsTierKey)
	if rid != "" || tier != "" {
		id += natsIDSep + "replay=" + rid + ",tier=" + tier
	}
	return id
}

// NATSMarshal converts msg into a NATS message for subject. It never fails.
//
// The UUID goes to [NATSUUIDHeader], the ID from [NATSMsgID] to Nats-Msg-Id,
// and every metadata field to a header of its name, except the fields set
// on consume ([NATSNumDeliveredKey], [NATSStreamSeqKey]) and those starting
// with "Nats-" (JetStream's own, such as Nats-Expected-Stream), and those that a
// NATS header line cannot carry faithfully, which go base64-encoded under
// [NATSEncodedPrefix] (nats.go would drop an invalid name and rewrite line
// breaks and blanks silently).
func NATSMarshal(subject string, msg *message.Message) *natsgo.Msg {
	h := make(natsgo.Header, len(msg.Metadata)+2)
	for k, v := range msg.Metadata {
		if k == NATSUUIDHeader || k == NATSNumDeliveredKey || k == NATSStreamSeqKey || natsReserved(k) {
			continue
		}
		if natsHeaderSafe(k, v) {
			h[k] = []string{v}
			continue
		}
		h[NATSEncodedPrefix+base64.RawURLEncoding.EncodeToString([]byte(k))] = []string{base64.StdEncoding.EncodeToString([]byte(v))}
	}
	if msg.UUID != "" {
		if natsHeaderSafe(NATSUUIDHeader, msg.UUID) {
			h[NATSUUIDHeader] = []string{msg.UUID}
		} else {
			h[NATSEncodedPrefix+base64.RawURLEncoding.EncodeToString([]byte(NATSUUIDHeader))] = []string{base64.StdEncoding.EncodeToString([]byte(msg.UUID))}
		}
	}
	if id := NATSMsgID(msg); id != "" {
		h[natsgo.MsgIdHdr] = []string{natsSafeID(id)}
	}
	return &natsgo.Msg{Subject: subject, Header: h, Data: msg.Payload}
}

// NATSUnmarshal converts a NATS message's headers and data into a Watermill
// message. It never fails: what it cannot convert faithfully is reported in
// "idempo_malformed", which makes the idempo middleware dead-letter the
// message instead of running it.
//
// The UUID is read from [NATSUUIDHeader] ("" when absent), every other
// header becomes a metadata field (a header with several values becomes a
// JSON array of strings; an encoded one under [NATSEncodedPrefix] is decoded;
// headers starting with "Nats-", which JetStream interprets, are left out),
// and Nats-Msg-Id becomes [NATSMsgIDKey] unless it is the UUID (without the
// suffix [NATSMsgID] adds). Malformed are: several UUID or
// Nats-Msg-Id values, invalid UTF-8, and an encoded header that does not
// decode.
func NATSUnmarshal(h natsgo.Header, data []byte) *message.Message {
	md := make(message.Metadata, len(h)+1)
	var problems []string
	uuid := ""
	set := func(k, v string) {
		if k == NATSUUIDHeader {
			uuid = v
			return
		}
		md[k] = v
	}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		if enc, ok := strings.CutPrefix(k, NATSEncodedPrefix); ok && len(vs) == 1 {
			name, kerr := base64.RawURLEncoding.DecodeString(enc)
			val, verr := base64.StdEncoding.DecodeString(vs[0])
			if kerr == nil && verr == nil {
				set(string(name), string(val))
				continue
			}
			problems = append(problems, fmt.Sprintf("header %q does not decode", dlqmeta.Truncate(k, 64)))
		}
		v := vs[0]
		if len(vs) > 1 {
			if k == NATSUUIDHeader || k == natsgo.MsgIdHdr {
				problems = append(problems, fmt.Sprintf("header %q has %d values", k, len(vs)))
			}
			j, _ := json.Marshal(vs) // strings always encode
			v = string(j)
		}
		if !utf8.ValidString(v) {
			problems = append(problems, fmt.Sprintf("header %q is not UTF-8", dlqmeta.Truncate(strings.ToValidUTF8(k, "?"), 64)))
			v = strings.ToValidUTF8(v, "\uFFFD")
		}
		if natsReserved(k) {
			continue // Nats-Msg-Id below; the others are the publisher's
		}
		set(k, v)
	}
	if vs := h[natsgo.MsgIdHdr]; len(vs) > 0 {
		id, _, _ := strings.Cut(strings.ToValidUTF8(vs[0], "\uFFFD"), natsIDSep)
		if _, has := md[NATSMsgIDKey]; !has && id != natsSafeID(uuid) && id != "" {
			md[NATSMsgIDKey] = id
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		md[dlqmeta.KeyMalformed] = strings.Join(problems, "; ")
	}
	msg := message.NewMessage(uuid, data)
	msg.Metadata = md
	return msg
}

// NATSSetDelivery records where a consumed message sits and how often
// JetStream has delivered it.
func NATSSetDelivery(msg *message.Message, streamSeq, numDelivered uint64) {
	msg.Metadata[NATSStreamSeqKey] = strconv.FormatUint(streamSeq, 10)
	msg.Metadata[NATSNumDeliveredKey] = strconv.FormatUint(numDelivered, 10)
}

// natsSafeID returns id, or when a header line cannot carry it as it is
// (line breaks, blanks at either end, invalid UTF-8), "sha256:" and its
// hash, which deduplicates just as well.
func natsSafeID(id string) string {
	if id == "" || natsHeaderSafe(natsgo.MsgIdHdr, id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// natsReserved reports whether k is a header JetStream interprets on
// publish (Nats-Msg-Id, Nats-Expected-Stream and the other expectations,
// Nats-Rollup, Nats-TTL …): never metadata, never sent from metadata, or a
// copy of a consumed message republished elsewhere would carry the
// original's expectations and be refused.
func natsReserved(k string) bool {
	return len(k) >= 5 && strings.EqualFold(k[:5], "Nats-")
}

// natsHeaderSafe reports whether k: v survives a NATS header line as is.
func natsHeaderSafe(k, v string) bool {
	if k == "" || strings.HasPrefix(k, NATSEncodedPrefix) {
		return false
	}
	for i := range len(k) {
		if !isTokenChar(k[i]) {
			return false
		}
	}
	return utf8.ValidString(v) && strings.Trim(v, " \t") == v && !strings.ContainsFunc(v, isCtl)
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

// isTokenChar reports whether c may appear in an HTTP header name (RFC 7230
// token), which is what nats.go writes.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
