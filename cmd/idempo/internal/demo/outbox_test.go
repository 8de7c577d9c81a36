package demo_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/cmd/idempo/internal/demo"
)

// The outbox run on the embedded default (SQLite, GoChannel, which hands
// every message to every consumer: concurrent twins at both hops) and on
// PostgreSQL with the embedded Kafka cluster in key order: every committed
// change has one effect at each hop, rolled-back ones have none, and the
// faults really happened (rollbacks, publishes reported failed after the
// broker took them).
func TestOutboxRunHoldsTheLedger(t *testing.T) {
	for _, tc := range []struct {
		name, broker, store, ordering string
	}{
		{"sqlite-gochannel", "", "sqlite://" + filepath.Join(t.TempDir(), "ob.db"), ""},
		{"postgres-kafka-key", "kafka", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := demo.Run(context.Background(), demo.Options{
				Outbox: true, Events: 600, Broker: tc.broker, Store: tc.store, Ordering: tc.ordering,
				Timeout: 3 * time.Minute,
			})
			require.NoError(t, err)
			require.NoError(t, l.Verdict())
			require.NotNil(t, l.PhantomEffects)
			require.Zero(t, *l.PhantomEffects)
			require.Positive(t, l.RolledBack, "some transactions were rolled back")
			require.Equal(t, 600, l.UniqueEvents+l.RolledBack)
			require.Equal(t, l.UniqueEvents, l.Effects)
			require.Equal(t, l.UniqueEvents, l.FollowUpEffects)
			require.Positive(t, l.RelayRepublished, "some publishes were reported failed after the broker took them")
			if tc.ordering == "key" {
				require.NotNil(t, l.OrderViolations)
				require.Zero(t, *l.OrderViolations)
			}
		})
	}
}

// A build that writes the event outside the business transaction is
// caught: rolled-back changes get effects.
func TestOutboxRunCatchesAnOutboxWriteOutsideTheTransaction(t *testing.T) {
	l, err := demo.Run(context.Background(), demo.Options{
		Outbox: true, OutboxOutsideTx: true, Events: 300,
		Store: "sqlite://" + filepath.Join(t.TempDir(), "ob.db"), Timeout: 2 * time.Minute,
	})
	require.NoError(t, err)
	require.ErrorIs(t, l.Verdict(), demo.ErrVerdict)
	require.ErrorContains(t, l.Verdict(), "phantom_effects")
	require.Positive(t, *l.PhantomEffects)
}

func TestOutboxRunNeedsASQLStore(t *testing.T) {
	for _, store := range []string{"memory", "redis://127.0.0.1:6379/0"} {
		_, err := demo.Run(context.Background(), demo.Options{Outbox: true, Events: 10, Store: store})
		require.ErrorIs(t, err, demo.ErrOutboxStore, store)
	}
}
