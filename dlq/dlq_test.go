package dlq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPublishCopiesPayloadAndMetadata(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer gc.Close()
	var hooked *message.Message
	r, err := dlq.New(dlq.Config{Publisher: gc, OnDeadLettered: func(_ context.Context, c *message.Message, _ dlq.Info) { hooked = c }})
	require.NoError(t, err)
	orig := message.NewMessage("u1", []byte("\x00binary\xff"))
	orig.Metadata.Set("user", "v")
	orig.Metadata.Set(dlqmeta.KeyReplays, "2")
	orig.Metadata.Set(dlqmeta.KeyReplayID, "r-old")
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
	require.Equal(t, "orders", c.Metadata.Get(dlqmeta.KeyOriginalTopic))
	require.Equal(t, "e1", c.Metadata.Get(dlqmeta.KeyEventID))
	require.Equal(t, "3", c.Metadata.Get(dlqmeta.KeyDeliveries))
	require.Equal(t, "2", c.Metadata.Get(dlqmeta.KeyReplays))
	require.Empty(t, c.Metadata.Get(dlqmeta.KeyReplayID), "a replay marker does not travel into the DLQ")
	require.Equal(t, dlqmeta.EntryID("h", "e1", "u1", 2), c.UUID)
	require.Equal(t, c.UUID, hooked.UUID)
	require.Empty(t, orig.Metadata.Get(dlqmeta.KeyReason), "the original is not modified")
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

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := dlq.New(dlq.Config{})
	require.ErrorIs(t, err, dlq.ErrInvalidConfig)
	require.ErrorContains(t, err, "Publisher is required")
	require.NoError(t, dlq.Config{Publisher: gochannel.NewGoChannel(gochannel.Config{}, nil)}.Validate(), "only the publisher is required")
}
