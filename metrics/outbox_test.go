package metrics_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/metrics"
	"github.com/idempo/idempo/outbox"
)

func TestOutboxCollector(t *testing.T) {
	t.Parallel()
	db, err := sqlstore.OpenSQLite(filepath.Join(t.TempDir(), "outbox.db"))
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ob, err := outbox.New(db, nil)
	require.NoError(t, err)
	require.NoError(t, ob.Migrate(ctx))
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, ob.Write(ctx, tx, "orders", message.NewMessage("a", nil), message.NewMessage("b", nil)))
	require.NoError(t, tx.Commit())

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewOutboxCollector(ob))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP idempo_outbox_pending_rows Unsent outbox rows, due or waiting for a retry.
# TYPE idempo_outbox_pending_rows gauge
idempo_outbox_pending_rows{topic="orders"} 2
# HELP idempo_outbox_dead_rows Rows in the outbox's dead table.
# TYPE idempo_outbox_dead_rows gauge
idempo_outbox_dead_rows{topic="orders"} 0
# HELP idempo_outbox_relay_published_rows_total Outbox rows published and marked by the relays of this process.
# TYPE idempo_outbox_relay_published_rows_total counter
idempo_outbox_relay_published_rows_total 0
`), "idempo_outbox_pending_rows", "idempo_outbox_dead_rows", "idempo_outbox_relay_published_rows_total"))
	n, err := testutil.GatherAndCount(reg, "idempo_outbox_oldest_pending_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	require.NoError(t, db.Close())
	_, err = reg.Gather()
	require.Error(t, err, "a failing Status fails the scrape")
}
