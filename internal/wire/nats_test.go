package wire_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/wire"
)

// natsWire sends h through the header encoding nats.go uses on publish
// (http.Header.Write after the NATS/1.0 line) and decodes it as nats.go
// does on receipt.
func natsWire(t testing.TB, h natsgo.Header) natsgo.Header {
	var b bytes.Buffer
	b.WriteString("NATS/1.0\r\n")
	if err := http.Header(h).Write(&b); err != nil {
		t.Fatal(err)
	}
	b.WriteString("\r\n")
	out, err := natsgo.DecodeHeadersMsg(b.Bytes())
	if err != nil {
		t.Fatalf("decode %q: %v", b.String(), err)
	}
	return out
}

func TestNATSRoundTrip(t *testing.T) {
	t.Parallel()
	m := message.NewMessage("uuid-1", []byte("p"))
	for k, v := range map[string]string{
		"plain": "v", "cloudEvents:id": "evt", "idempo_panic_stack": "a\nb\r\n", "spaced": " x ", "tab": "a\tb",
		"empty": "", "with space": "v", "bad": "\xff", "Nats-Expected-Stream": "other", wire.NATSNumDeliveredKey: "3",
	} {
		m.Metadata[k] = v
	}
	nm := wire.NATSMarshal("subj", m)
	require.Equal(t, "uuid-1", nm.Header.Get("Nats-Msg-Id"))
	require.Empty(t, nm.Header.Get("Nats-Expected-Stream"), "JetStream's headers are never sent from metadata")
	back := wire.NATSUnmarshal(natsWire(t, nm.Header), nm.Data)
	require.Equal(t, "uuid-1", back.UUID)
	require.Empty(t, back.Metadata.Get(dlqmeta.KeyMalformed))
	for k, v := range m.Metadata {
		switch k {
		case "Nats-Expected-Stream", wire.NATSNumDeliveredKey:
			require.NotContains(t, back.Metadata, k)
		default:
			require.Equal(t, v, back.Metadata[k], k)
		}
	}
	require.NotContains(t, back.Metadata, wire.NATSMsgIDKey, "a Watermill message's ID is its UUID")
}

// A replay and a message back from a delay tier get another Nats-Msg-Id
// than the original (JetStream would drop them as duplicates), and read
// back with the original's event ID; a dead-letter copy uses its entry ID.
func TestNATSMsgIDs(t *testing.T) {
	t.Parallel()
	foreign := message.NewMessage("", nil)
	foreign.Metadata[wire.NATSMsgIDKey] = "order-1"
	require.Equal(t, "order-1", wire.NATSMsgID(foreign))

	replay := foreign.Copy()
	replay.Metadata[dlqmeta.KeyReplayID] = "entry-9"
	require.NotEqual(t, "order-1", wire.NATSMsgID(replay))
	back := wire.NATSUnmarshal(natsWire(t, wire.NATSMarshal("s", replay).Header), nil)
	require.Equal(t, "order-1", back.Metadata.Get(wire.NATSMsgIDKey))

	tier := message.NewMessage("u", nil)
	tier.Metadata["idempo_redelivery_tier"] = "1"
	require.NotEqual(t, "u", wire.NATSMsgID(tier))
	back = wire.NATSUnmarshal(natsWire(t, wire.NATSMarshal("s", tier).Header), nil)
	require.Equal(t, "u", back.UUID)
	require.NotContains(t, back.Metadata, wire.NATSMsgIDKey)

	dead := message.NewMessage("entry-1", nil)
	dead.Metadata[dlqmeta.KeyEntryID] = "entry-1"
	dead.Metadata[wire.NATSMsgIDKey] = "order-1"
	require.Equal(t, "entry-1", wire.NATSMsgID(dead))
	back = wire.NATSUnmarshal(natsWire(t, wire.NATSMarshal("s", dead).Header), nil)
	require.Equal(t, "order-1", back.Metadata.Get(wire.NATSMsgIDKey), "the copy keeps its original's event ID")

	// A foreign producer: Nats-Msg-Id and no UUID header.
	back = wire.NATSUnmarshal(natsgo.Header{"Nats-Msg-Id": {"ext-7"}}, nil)
	require.Equal(t, "", back.UUID)
	require.Equal(t, "ext-7", back.Metadata.Get(wire.NATSMsgIDKey))
}

// FuzzNATSMetadata: any metadata survives the wire as it was, and
// unmarshalling any headers never panics.
func FuzzNATSMetadata(f *testing.F) {
	for _, s := range [][3]string{{"k", "v", "u"}, {"cloudEvents:id", "a\nb", ""}, {"Idempo-Enc-x", " ", "u u"}, {"", "\xff", "\n"}, {"Nats-Msg-Id", "x", "y"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, k, v, uuid string) {
		m := message.NewMessage(uuid, []byte(v))
		m.Metadata[k] = v
		nm := wire.NATSMarshal("s", m)
		back := wire.NATSUnmarshal(natsWire(t, nm.Header), nm.Data)
		if back.UUID != uuid {
			t.Fatalf("UUID %q came back as %q", uuid, back.UUID)
		}
		skip := k == wire.NATSUUIDHeader || k == wire.NATSNumDeliveredKey || k == wire.NATSStreamSeqKey || len(k) >= 5 && bytes.EqualFold([]byte(k[:5]), []byte("nats-"))
		if !skip && back.Metadata[k] != v {
			t.Fatalf("metadata %q=%q came back as %q (headers %q)", k, v, back.Metadata[k], nm.Header)
		}
		if back.Metadata.Get(dlqmeta.KeyMalformed) != "" && k != dlqmeta.KeyMalformed {
			t.Fatalf("marked malformed: %q", back.Metadata.Get(dlqmeta.KeyMalformed))
		}
		_ = wire.NATSUnmarshal(natsgo.Header{k: {v, uuid}, wire.NATSUUIDHeader: {uuid}, "Nats-Msg-Id": {v}}, nil)
	})
}
