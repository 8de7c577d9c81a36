package redisstore_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/deduptest"
	"github.com/idempo/idempo/dedup/redisstore"
)

// freeClusterPort returns a free port whose cluster bus port (+10000) is free too.
func freeClusterPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := freePort(t)
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

// startCluster starts a private three-master Redis Cluster.
func startCluster(t *testing.T) []string {
	t.Helper()
	var addrs []string
	for range 3 {
		port := freeClusterPort(t)
		srv := &privateServer{tb: t, port: port, dir: t.TempDir(), extra: []string{
			"--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
			"--cluster-config-file", filepath.Join(t.TempDir(), "nodes.conf"),
		}}
		srv.start()
		t.Cleanup(srv.stop)
		addrs = append(addrs, srv.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	require.NoError(t, err, "redis-cli --cluster create: %s", out)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		require.Eventually(t, func() bool {
			info, err := c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		}, 30*time.Second, 50*time.Millisecond, "cluster node %s never reported cluster_state:ok", a)
		_ = c.Close()
	}
	return addrs
}

// TestCluster runs the conformance suite on a private Redis Cluster through a
// ClusterClient: every script touches one hash-tagged key, so one slot.
func TestCluster(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The slot map may take a moment to settle after creation.
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, 30*time.Second, 50*time.Millisecond)

	st, err := redisstore.New(c, nil)
	require.NoError(t, err)
	t.Run("Conformance", func(t *testing.T) {
		deduptest.Run(t, func(*testing.T) dedup.Store { return st }, deduptest.Features{
			Parallel: true, Granularity: time.Millisecond,
			Reopen: func(t *testing.T, _ dedup.Store) dedup.Store {
				c2 := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
				t.Cleanup(func() { _ = c2.Close() })
				fresh, err := redisstore.New(c2, nil)
				require.NoError(t, err)
				return fresh
			},
		})
	})

	// Records spread over the masters.
	slots := map[int64]bool{}
	for i := range 50 {
		k := dedup.Key{Scope: "cluster", ID: fmt.Sprint(i)}
		slot, err := c.ClusterKeySlot(ctx, st.RedisKey(k)).Result()
		require.NoError(t, err)
		slots[slot] = true
	}
	require.Greater(t, len(slots), 40, "keys hash to many slots")

	// The eviction policy is checked on every master.
	node := redis.NewClient(&redis.Options{Addr: addrs[2]})
	t.Cleanup(func() { _ = node.Close() })
	require.NoError(t, node.ConfigSet(ctx, "maxmemory-policy", "volatile-ttl").Err())
	_, err = redisstore.New(c, nil)
	require.ErrorIs(t, err, redisstore.ErrEvictionPolicy)
	require.ErrorContains(t, err, addrs[2])
	require.ErrorContains(t, err, "volatile-ttl")
}

// TestSentinel runs the store through a FailoverClient: a private master
// watched by a private Sentinel.
func TestSentinel(t *testing.T) {
	t.Parallel()
	master := startPrivateServer(t)
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil,
		"port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor idempo 127.0.0.1 %d 1\nsentinel down-after-milliseconds idempo 5000\n",
		port, dir, master.port), 0o600))
	sentinel := &privateServer{tb: t, port: port, dir: dir}
	sentinel.cmd = exec.Command("redis-server", conf, "--sentinel")
	require.NoError(t, sentinel.cmd.Start())
	t.Cleanup(sentinel.stop)

	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            "idempo",
		SentinelAddrs:         []string{sentinel.addr()},
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, 30*time.Second, 50*time.Millisecond,
		"the Sentinel never answered for master idempo")

	st, err := redisstore.New(c, nil)
	require.NoError(t, err)
	k := dedup.Key{Scope: "sentinel", ID: "event-1"}
	r := claimReq(time.Minute, time.Hour)
	res, err := st.Claim(ctx, k, r)
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	require.NoError(t, st.Complete(ctx, k, r.Token, time.Hour))
	res, err = st.Claim(ctx, k, claimReq(time.Minute, time.Hour))
	require.NoError(t, err)
	require.Equal(t, dedup.StatusDone, res.Status)
	// The record is on the master the Sentinel named.
	direct := privateClient(t, master, nil)
	require.Equal(t, "done", readRecord(t, ctx, direct, st.RedisKey(k)).state)
}
