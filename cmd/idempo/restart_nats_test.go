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

	verifyBrokerRestart(t, dir, fmt.Sprintf("nats://127.0.0.1:%d", port), "bash "+restart, 2, 5*time.Minute)
}
