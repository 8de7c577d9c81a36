package kafka

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A consumer's read timeout outlasts the rebalance timeout, or a JoinGroup
// waiting for a member that finishes a long handler is cut and retried.
func TestReadTimeoutOutlastsRebalance(t *testing.T) {
	t.Parallel()
	for _, rebalance := range []time.Duration{0, time.Second, 2 * time.Minute} {
		c := Config{Brokers: []string{"127.0.0.1:9092"}, RebalanceTimeout: rebalance}.withDefaults()
		sc, err := c.saramaConfig(false)
		require.NoError(t, err)
		require.GreaterOrEqual(t, sc.Net.ReadTimeout, sc.Consumer.Group.Rebalance.Timeout+5*time.Second, "rebalance timeout %v", rebalance)
	}
}
