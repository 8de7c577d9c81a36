package kafka_test

import (
	"bytes"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/retry"
)

// A record larger than the producer or the broker accepts can never be
// published: the error is permanent, so an outbox relay dead-letters the row
// at once instead of retrying it, and the stack does not retry the publish.
// A publish that fails for a passing reason (here: the publisher is closed)
// stays retryable.
func TestPublishTooLargeIsPermanent(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	p, err := kafka.NewPublisher(e.Config(""), nil)
	require.NoError(t, err)
	topic := uniqueName("toolarge")
	require.NoError(t, p.Publish(topic, message.NewMessage("small", []byte("ok"))))

	err = p.Publish(topic, message.NewMessage("huge", bytes.Repeat([]byte("x"), 2<<20)))
	require.Error(t, err)
	require.True(t, retry.IsPermanent(err), "a too-large record must be a permanent error, got %v", err)

	require.NoError(t, p.Close())
	err = p.Publish(topic, message.NewMessage("late", []byte("x")))
	require.ErrorIs(t, err, kafka.ErrClosed)
	require.False(t, retry.IsPermanent(err), "a closed publisher is not a permanent failure of the message")
}
