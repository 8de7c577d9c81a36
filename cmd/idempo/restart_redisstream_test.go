package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/cmd/idempo/internal/verify"
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

	bin := filepath.Join(dir, "idempo")
	out, err = exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build idempo: %s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "verify",
		"--broker", fmt.Sprintf("redis-stream://127.0.0.1:%d/0", port),
		"--store", "redis://127.0.0.1:6379/0",
		"--events", "1000", "--kills", "1", "--restarts", "1",
		"--broker-restart-cmd", "bash "+restart,
		"--timeout", "3m", "--json")
	var stderr strings.Builder
	cmd.Stderr = io.MultiWriter(testWriter{t}, &stderr)
	stdout, err := cmd.Output()
	var res verify.Result
	require.NoError(t, json.Unmarshal(stdout, &res), "verify's JSON: %s", stdout)
	t.Logf("verify with a Redis restart: %+v", res)
	require.NoError(t, err, "verify's verdict")
	require.Equal(t, 1, res.Restarts, "the broker was restarted")
	m := regexp.MustCompile(`restarting the broker with (\d+)/(\d+) events settled`).FindStringSubmatch(stderr.String())
	require.NotNil(t, m, "verify says when it restarts the broker")
	require.NotEqual(t, m[1], m[2], "the restart came before every event was settled")
	require.Zero(t, res.Lost)
	require.Equal(t, res.ExpectedDeadLettered, res.DeadLettered)
	require.LessOrEqual(t, res.DoubleEffects, res.MaxAllowedDoubleEffects)
}
