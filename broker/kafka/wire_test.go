package kafka_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/internal/wire"
)

// The documented constant is the one the converter reads.
func TestPartitionKeyMetadataIsTheConverters(t *testing.T) {
	require.Equal(t, wire.KafkaPartitionKey, kafka.PartitionKeyMetadata)
}
