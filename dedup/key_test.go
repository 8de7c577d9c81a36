package dedup_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
)

func TestEncodeIsUnambiguous(t *testing.T) {
	t.Parallel()
	a := dedup.Key{Scope: "a:b", ID: "c"}
	b := dedup.Key{Scope: "a", ID: "b:c"}
	require.NotEqual(t, a.Encode(), b.Encode())
	require.NotEqual(t, a.Hash(), b.Hash())
	for _, k := range []dedup.Key{a, b, {Scope: "s", ID: "\x00\xff"}} {
		got, err := dedup.DecodeKey(k.Encode())
		require.NoError(t, err)
		require.Equal(t, k, got)
	}
}

func TestExtractors(t *testing.T) {
	t.Parallel()
	m := message.NewMessage("uuid-1", nil)
	id, err := dedup.UUID()(m)
	require.NoError(t, err)
	require.Equal(t, "uuid-1", id)

	_, err = dedup.Metadata("id")(m)
	require.ErrorIs(t, err, dedup.ErrMissingEventID)
	require.ErrorContains(t, err, `metadata "id"`)

	for _, k := range []string{"ce_id", "cloudEvents:id", "cloudEvents_id", "ce-id"} {
		m := message.NewMessage("", nil)
		m.Metadata.Set(k, "ce-"+k)
		id, err := dedup.CloudEventsID()(m)
		require.NoError(t, err, k)
		require.Equal(t, "ce-"+k, id)
	}
	_, err = dedup.CloudEventsID()(message.NewMessage("", nil))
	require.ErrorIs(t, err, dedup.ErrMissingEventID)
	require.ErrorContains(t, err, "cloudEvents:id")

	boom := errors.New("boom")
	_, err = dedup.FirstOf(func(*message.Message) (string, error) { return "", boom }, dedup.UUID())(m)
	require.ErrorIs(t, err, boom, "a real error stops the search")

	require.Len(t, dedup.Fingerprint(m), 32)
}

func FuzzDecodeKey(f *testing.F) {
	f.Add(dedup.Key{Scope: "s", ID: "id"}.Encode())
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := dedup.DecodeKey(b)
		if err != nil {
			require.ErrorIs(t, err, dedup.ErrInvalidKey)
			return
		}
		require.NoError(t, k.Validate())
		require.True(t, bytes.Equal(k.Encode(), b), "round trip")
		_ = k.String()
	})
}
