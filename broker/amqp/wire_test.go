package amqp_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/internal/wire"
)

// The documented constant is the one the converter fills.
func TestMessageIDKeyIsTheConverters(t *testing.T) {
	require.Equal(t, wire.AMQPMessageIDKey, amqp.MessageIDKey)
}
