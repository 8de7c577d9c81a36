package middleware_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

// Validate judges the Config as given, zero fields standing for their
// defaults: the smallest valid Config validates and New accepts it, and
// neither changes the caller's values.
func TestValidateAcceptsTheZeroValueOfOptionalFields(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, middleware.Config{}.Validate(), middleware.ErrInvalidConfig, "Store and DLQ.Publisher are required")
	minimal := middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}}
	require.NoError(t, minimal.Validate())
	redelivery := &middleware.Redelivery{Delays: []time.Duration{time.Second}}
	cfg := minimal
	cfg.Redelivery = redelivery
	require.NoError(t, cfg.Validate())
	s, err := middleware.New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Nil(t, redelivery.Topic, "the caller's Redelivery is not filled in")
	require.Nil(t, redelivery.Publisher, "the caller's Redelivery is not filled in")
	require.ErrorContains(t, middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}, Lease: time.Millisecond}.Validate(), "MinLease")
}
