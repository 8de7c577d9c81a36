package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestVerifyRedisStreamsRestart runs idempo verify on a redis-server of its
// own (AOF on, fsync always, a spare port) used as the Redis Streams broker,
// and kills it with SIGKILL and starts it again mid-run: nothing is lost.
func TestVerifyRedisStreamsRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server of its own")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH")
	}
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	pidfile := filepath.Join(dir, "redis.pid")
	start := filepath.Join(dir, "start.sh")
	require.NoError(t, os.WriteFile(start, fmt.Appendf(nil, `redis-server --port %d --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always --dir %q --daemonize yes --pidfile %q --logfile %q
for i in $(seq 1 150); do
  if (echo > /dev/tcp/127.0.0.1/%d) 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "the private redis-server did not start" >&2
exit 1
`, port, dir, pidfile, filepath.Join(dir, "redis.log"), port), 0o700))
	kill := filepath.Join(dir, "kill.sh")
	require.NoError(t, os.WriteFile(kill, fmt.Appendf(nil, `pid=$(cat %q 2>/dev/null) || exit 0
kill -9 "$pid" 2>/dev/null
for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.05; done
`, pidfile), 0o700))
	restart := filepath.Join(dir, "restart.sh")
	require.NoError(t, os.WriteFile(restart, fmt.Appendf(nil, "bash %q && bash %q\n", kill, start), 0o700))
	out, err := exec.Command("bash", start).CombinedOutput()
	require.NoError(t, err, "start the private redis-server: %s", out)
	t.Cleanup(func() { _ = exec.Command("bash", kill).Run() })

	verifyBrokerRestart(t, dir, fmt.Sprintf("redis-stream://127.0.0.1:%d/0", port), "bash "+restart, 1, 3*time.Minute)
}
