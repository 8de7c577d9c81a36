package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/cmd/idempo/internal/verify"
)

// TestVerifyRabbitMQRestart restarts RabbitMQ in the middle of a verify run:
// the broker goes down while the consumers hold deliveries and the DLQ reader
// is subscribed, every client reconnects by itself, and nothing may be lost.
//
// The broker is a node of the test's own (its own name, ports and data
// directory), never the shared one. verify runs from a binary built without
// the race detector: watermill-amqp v3.1.0 rewrites its connection fields
// without synchronisation when it reconnects, which the race detector
// reports in any process whose clients reconnect (see docs/backends.md).
func TestVerifyRabbitMQRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a RabbitMQ node of its own")
	}
	t.Parallel()
	dir := t.TempDir()
	sbin := "/usr/lib/rabbitmq/bin"
	for _, p := range []string{"rabbitmq-server", "rabbitmqctl"} {
		_, err := os.Stat(filepath.Join(sbin, p))
		require.NoError(t, err, "the test runs a private RabbitMQ node and needs %s (apt-get install rabbitmq-server)", p)
	}
	port, dist := freePort(t), freePort(t)
	name := fmt.Sprintf("idempo-verify-%d@localhost", port)
	conf := filepath.Join(dir, "rabbitmq.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, "listeners.tcp.default = 127.0.0.1:%d\n", port), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rabbitmq-env.conf"), nil, 0o600))
	env := map[string]string{
		"HOME":                          dir,
		"RABBITMQ_NODENAME":             name,
		"RABBITMQ_NODE_PORT":            fmt.Sprint(port),
		"RABBITMQ_DIST_PORT":            fmt.Sprint(dist),
		"RABBITMQ_MNESIA_BASE":          filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE":             filepath.Join(dir, "log"),
		"RABBITMQ_CONFIG_FILE":          conf,
		"RABBITMQ_ENABLED_PLUGINS_FILE": filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE":        filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_PLUGINS_EXPAND_DIR":   filepath.Join(dir, "plugins-expand"),
		"ERL_EPMD_ADDRESS":              "127.0.0.1",
	}
	var exports strings.Builder
	for k, v := range env {
		fmt.Fprintf(&exports, "export %s=%q\n", k, v)
	}
	// start.sh starts the node detached and waits (up to 3 minutes: an Erlang
	// boot is slow on a loaded machine) until it accepts connections;
	// restart.sh stops it cleanly first.
	start := filepath.Join(dir, "start.sh")
	require.NoError(t, os.WriteFile(start, fmt.Appendf(nil, `%s
%s/rabbitmq-server -detached
for i in $(seq 1 900); do
  if (echo > /dev/tcp/127.0.0.1/%d) 2>/dev/null; then exit 0; fi
  sleep 0.2
done
echo "the private RabbitMQ node did not start" >&2
exit 1
`, exports.String(), sbin, port), 0o700))
	stop := filepath.Join(dir, "stop.sh")
	require.NoError(t, os.WriteFile(stop, fmt.Appendf(nil, "%s\n%s/rabbitmqctl -n %q stop\n", exports.String(), sbin, name), 0o700))
	restart := filepath.Join(dir, "restart.sh")
	require.NoError(t, os.WriteFile(restart, fmt.Appendf(nil, "bash %q && bash %q\n", stop, start), 0o700))

	out, err := exec.Command("bash", start).CombinedOutput()
	require.NoError(t, err, "start the private RabbitMQ node: %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("bash", stop).CombinedOutput(); err != nil {
			t.Logf("stop the private RabbitMQ node: %v: %s", err, out)
		}
	})

	_, settled := verifyBrokerRestart(t, dir, fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port), "bash "+restart, 0, 5*time.Minute)
	require.NotEqual(t, "0", settled, "the restart came after the consumers were at work")
}

// verifyBrokerRestart builds idempo into dir (without the race detector:
// see TestVerifyRabbitMQRestart), runs verify on broker with the shared
// Redis as its store, kills consumer kills and one broker restart by
// restartCmd, and checks the verdict: the broker restarted once before
// every event was settled, nothing lost, dead letters as expected, double
// effects within the store's allowance. It returns the result and how many
// events were settled when the restart came.
func verifyBrokerRestart(t *testing.T, dir, broker, restartCmd string, kills int, timeout time.Duration) (verify.Result, string) {
	t.Helper()
	bin := filepath.Join(dir, "idempo")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build idempo without the race detector: %s", out)

	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "verify",
		"--broker", broker,
		"--store", "redis://127.0.0.1:6379/0",
		"--events", "1000", "--kills", strconv.Itoa(kills), "--restarts", "1",
		"--broker-restart-cmd", restartCmd,
		"--timeout", timeout.String(), "--json")
	var stderr strings.Builder
	cmd.Stderr = io.MultiWriter(testWriter{t}, &stderr)
	stdout, err := cmd.Output()
	var res verify.Result
	require.NoError(t, json.Unmarshal(stdout, &res), "verify's JSON: %s", stdout)
	t.Logf("verify with a broker restart: %+v", res)
	require.NoError(t, err, "verify's verdict")
	require.Equal(t, 1, res.Restarts, "the broker was restarted")
	if kills > 0 {
		require.Positive(t, res.Kills, "the run killed consumers")
	}
	m := regexp.MustCompile(`restarting the broker with (\d+)/(\d+) events settled`).FindStringSubmatch(stderr.String())
	require.NotNil(t, m, "verify says when it restarts the broker")
	require.NotEqual(t, m[1], m[2], "the restart came before every event was settled")
	require.Zero(t, res.Lost)
	require.Equal(t, res.ExpectedDeadLettered, res.DeadLettered)
	require.LessOrEqual(t, res.DoubleEffects, res.MaxAllowedDoubleEffects)
	return res, m[1]
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
