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

// TestVerifyNATSRestart stops a NATS JetStream server (SIGTERM) in the
// middle of a verify run and starts it again on the same port and store:
// the consumers hold deliveries and the DLQ reader is subscribed, every
// client reconnects by itself, and nothing may be lost. The server is one of
// the test's own, never the shared one.
func TestVerifyNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a nats-server of its own")
	}
	t.Parallel()
	const server = "/usr/sbin/nats-server"
	_, err := os.Stat(server)
	require.NoError(t, err, "the test runs a private NATS server and needs %s", server)
	dir := t.TempDir()
	port := freePort(t)
	pidFile := filepath.Join(dir, "pid")
	start := filepath.Join(dir, "start.sh")
	require.NoError(t, os.WriteFile(start, fmt.Appendf(nil, `%s -js -a 127.0.0.1 -p %d -sd %q >> %q 2>&1 &
echo $! > %q
for i in $(seq 1 600); do
  if (echo > /dev/tcp/127.0.0.1/%d) 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "the private NATS server did not start" >&2
exit 1
`, server, port, filepath.Join(dir, "store"), filepath.Join(dir, "server.log"), pidFile, port), 0o700))
	stop := filepath.Join(dir, "stop.sh")
	require.NoError(t, os.WriteFile(stop, fmt.Appendf(nil, `pid=$(cat %q) || exit 0
kill -TERM "$pid" 2>/dev/null || exit 0
for i in $(seq 1 600); do
  kill -0 "$pid" 2>/dev/null || exit 0
  sleep 0.1
done
kill -KILL "$pid"
`, pidFile), 0o700))
	restart := filepath.Join(dir, "restart.sh")
	require.NoError(t, os.WriteFile(restart, fmt.Appendf(nil, "bash %q && bash %q\n", stop, start), 0o700))

	out, err := exec.Command("bash", start).CombinedOutput()
	require.NoError(t, err, "start the private NATS server: %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("bash", stop).CombinedOutput(); err != nil {
			t.Logf("stop the private NATS server: %v: %s", err, out)
		}
	})

	bin := filepath.Join(dir, "idempo")
	out, err = exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build idempo: %s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "verify",
		"--broker", fmt.Sprintf("nats://127.0.0.1:%d", port),
		"--store", "redis://127.0.0.1:6379/0",
		"--events", "1000", "--kills", "2", "--restarts", "1",
		"--broker-restart-cmd", "bash "+restart,
		"--timeout", "5m", "--json")
	var stderr strings.Builder
	cmd.Stderr = io.MultiWriter(testWriter{t}, &stderr)
	stdout, err := cmd.Output()
	var res verify.Result
	require.NoError(t, json.Unmarshal(stdout, &res), "verify's JSON: %s", stdout)
	t.Logf("verify with a NATS restart: %+v", res)
	require.NoError(t, err, "verify's verdict")
	require.Equal(t, 1, res.Restarts, "the server was restarted")
	m := regexp.MustCompile(`restarting the broker with (\d+)/(\d+) events settled`).FindStringSubmatch(stderr.String())
	require.NotNil(t, m, "verify says when it restarts the broker")
	require.NotEqual(t, m[1], m[2], "the restart came before every event was settled")
	require.Zero(t, res.Lost)
	require.Equal(t, res.ExpectedDeadLettered, res.DeadLettered)
	require.LessOrEqual(t, res.DoubleEffects, res.MaxAllowedDoubleEffects)
}
