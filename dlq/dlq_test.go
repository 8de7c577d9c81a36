package dlq_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestPublishCopiesPayloadAndMetadata(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer gc.Close()
	var hooked *message.Message
	r, err := dlq.New(dlq.Config{Publisher: gc, OnDeadLettered: func(_ context.Context, c *message.Message, _ dlq.Info) { hooked = c }})
	require.NoError(t, err)
	orig := message.NewMessage("u1", []byte("\x00binary\xff"))
	orig.Metadata.Set("user", "v")
	orig.Metadata.Set(dlq.KeyReplays, "2")
	orig.Metadata.Set(dlq.KeyReplayID, "r-old")
	now := time.Now()
	info := dlq.Info{
		OriginalTopic: "orders", Handler: "h", Scope: "h", EventID: "e1", Deliveries: 3,
		Failure: dlq.Failure{Reason: dlq.ReasonPermanent, Error: "bad", ErrorClass: "permanent", Attempts: 1, FirstFailure: now, LastFailure: now},
	}
	require.NoError(t, r.Publish(context.Background(), orig, info))
	ch, err := gc.Subscribe(context.Background(), "orders.dlq")
	require.NoError(t, err)
	c := <-ch
	c.Ack()
	require.Equal(t, orig.Payload, c.Payload)
	require.Equal(t, "v", c.Metadata.Get("user"))
	require.Equal(t, "orders", c.Metadata.Get(dlq.KeyOriginalTopic))
	require.Equal(t, "e1", c.Metadata.Get(dlq.KeyEventID))
	require.Equal(t, "3", c.Metadata.Get(dlq.KeyDeliveries))
	require.Equal(t, "2", c.Metadata.Get(dlq.KeyReplays))
	require.Empty(t, c.Metadata.Get(dlq.KeyReplayID), "a replay marker does not travel into the DLQ")
	require.Equal(t, dlq.EntryID("h", "e1", "u1", 2), c.UUID)
	require.Equal(t, c.UUID, hooked.UUID)
	require.Empty(t, orig.Metadata.Get(dlq.KeyReason), "the original is not modified")
}

type failing struct{}

func (failing) Publish(string, ...*message.Message) error { return errors.New("down") }
func (failing) Close() error                              { return nil }

func TestPublishFailureIsErrPublish(t *testing.T) {
	r, err := dlq.New(dlq.Config{Publisher: failing{}})
	require.NoError(t, err)
	err = r.Publish(context.Background(), message.NewMessage("u", nil), dlq.Info{})
	require.ErrorIs(t, err, dlq.ErrPublish)
	_, err = dlq.New(dlq.Config{})
	require.ErrorContains(t, err, "Publisher is required")
}

func TestEntryIDStableAndDistinct(t *testing.T) {
	require.Equal(t, dlq.EntryID("s", "e", "u1", 0), dlq.EntryID("s", "e", "u2", 0), "derived from the event ID, not the UUID")
	require.NotEqual(t, dlq.EntryID("s", "e", "u", 0), dlq.EntryID("s", "e", "u", 1), "a replay cycle gets a new entry")
	require.NotEqual(t, dlq.EntryID("s", "", "u1", 0), dlq.EntryID("s", "", "u2", 0))
}

func FuzzDecodeFailure(f *testing.F) {
	f.Add(dlq.Failure{Reason: "x", Error: "e", Attempts: 3, FirstFailure: time.Unix(1, 0)}.Encode())
	f.Add([]byte("{"))
	f.Add([]byte(`{"reason":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, err := dlq.DecodeFailure(b)
		require.NotEmpty(t, fl.Reason, "a damaged note still dead-letters")
		if err == nil {
			again, err := dlq.DecodeFailure(fl.Encode())
			require.NoError(t, err)
			require.Equal(t, fl.Reason, again.Reason)
		}
	})
}

func TestEntryIDWithoutIDs(t *testing.T) {
	require.Empty(t, dlq.EntryID("s", "", "", 0), "neither ID: no derived entry ID")
	p := dlq.PositionEntryID("s", "orders", "1", "7", 0)
	require.NotEmpty(t, p)
	require.Equal(t, p, dlq.PositionEntryID("s", "orders", "1", "7", 0))
	for _, other := range []string{
		dlq.PositionEntryID("s", "orders", "1", "8", 0),
		dlq.PositionEntryID("s", "orders", "2", "7", 0),
		dlq.PositionEntryID("s", "payments", "1", "7", 0),
		dlq.PositionEntryID("t", "orders", "1", "7", 0),
		dlq.PositionEntryID("s", "orders", "1", "7", 1),
	} {
		require.NotEqual(t, p, other)
	}
	for _, bad := range [][3]string{{"", "1", "7"}, {"orders", "", "7"}, {"orders", "x", "7"}, {"orders", "1", "-1"}} {
		require.Empty(t, dlq.PositionEntryID("s", bad[0], bad[1], bad[2], 0), "%q", bad)
	}
}

func TestShortEventID(t *testing.T) {
	t.Parallel()
	short := strings.Repeat("é", dlq.MaxEventIDMetadata/2)
	require.Equal(t, short, dlq.ShortEventID(short), "IDs up to the limit are kept whole")
	long := strings.Repeat("é", 5000)
	got := dlq.ShortEventID(long)
	require.LessOrEqual(t, len(got), dlq.MaxEventIDMetadata)
	require.True(t, utf8.ValidString(got), "cut at a rune boundary")
	require.Contains(t, got, "(10000 bytes, sha256 ")
	require.NotEqual(t, got, dlq.ShortEventID(long+"x"), "long IDs sharing a prefix stay apart")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := dlq.New(dlq.Config{})
	require.ErrorIs(t, err, dlq.ErrInvalidConfig)
	require.ErrorContains(t, err, "Publisher is required")
	require.NoError(t, dlq.Config{Publisher: gochannel.NewGoChannel(gochannel.Config{}, nil)}.Validate(), "only the publisher is required")
}

func TestOpsConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := dlq.NewOps(dlq.OpsConfig{})
	require.ErrorIs(t, err, dlq.ErrInvalidConfig)
	require.ErrorContains(t, err, "Source is required")
	require.ErrorContains(t, dlq.OpsConfig{Source: newSliceDLQ(), Store: memstore.New(nil), MaxReplays: -1}.Validate(), "MaxReplays")
	require.NoError(t, dlq.OpsConfig{Source: newSliceDLQ(), Store: memstore.New(nil)}.Validate())
}
