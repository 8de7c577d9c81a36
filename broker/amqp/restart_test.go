package amqp_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
)

// privateNode is a RabbitMQ node of the test's own, on spare ports with its
// data in a temporary directory, so that restarting it never touches the
// shared broker.
type privateNode struct {
	t      *testing.T
	name   string
	port   int
	env    []string
	server string
	ctl    string
	cmd    *exec.Cmd
	exited chan error
	out    *bytes.Buffer
}

// startPrivateNode fails the test when the RabbitMQ server scripts are missing.
func startPrivateNode(t *testing.T) *privateNode {
	t.Helper()
	dir := t.TempDir()
	bin := "/usr/lib/rabbitmq/bin"
	server, ctl := filepath.Join(bin, "rabbitmq-server"), filepath.Join(bin, "rabbitmqctl")
	for _, p := range []string{server, ctl} {
		_, err := os.Stat(p)
		require.NoError(t, err, "the broker restart test runs a private RabbitMQ node and needs %s (apt-get install rabbitmq-server)", p)
	}
	port, dist := sparePort(t), sparePort(t)
	n := &privateNode{
		t:      t,
		name:   "idempo-test-" + watermill.NewShortUUID() + "@localhost",
		port:   port,
		server: server,
		ctl:    ctl,
	}
	conf := filepath.Join(dir, "rabbitmq.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, "listeners.tcp.default = 127.0.0.1:%d\n", port), 0o600))
	plugins := filepath.Join(dir, "enabled_plugins")
	require.NoError(t, os.WriteFile(plugins, []byte("[].\n"), 0o600))
	envFile := filepath.Join(dir, "rabbitmq-env.conf")
	require.NoError(t, os.WriteFile(envFile, nil, 0o600))
	n.env = append(os.Environ(),
		"HOME="+dir, // the node's own Erlang cookie
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_CONFIG_FILE="+conf,
		"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins,
		"RABBITMQ_CONF_ENV_FILE="+envFile,
		"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(dir, "plugins-expand"),
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
	t.Cleanup(n.kill)
	n.start()
	return n
}

func sparePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (n *privateNode) url() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port)
}

func (n *privateNode) start() {
	n.t.Helper()
	n.out = &bytes.Buffer{}
	cmd := exec.Command(n.server)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = n.out, n.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(n.t, cmd.Start())
	n.cmd = cmd
	n.exited = make(chan error, 1)
	go func(exited chan<- error) { exited <- cmd.Wait() }(n.exited)

	deadline := time.Now().Add(3 * time.Minute) // an Erlang boot is slow on a loaded machine
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			_ = conn.Close()
			return
		}
		select {
		case err := <-n.exited:
			n.cmd = nil
			require.FailNowf(n.t, "private RabbitMQ node exited", "%v: %s", err, n.out)
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			require.FailNowf(n.t, "private RabbitMQ node did not start", "%s", n.out)
		}
	}
}

// stop halts the node cleanly with rabbitmqctl and waits for it to exit.
func (n *privateNode) stop() {
	n.t.Helper()
	if n.cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctl := exec.CommandContext(ctx, n.ctl, "-n", n.name, "stop")
	ctl.Env = n.env
	out, err := ctl.CombinedOutput()
	require.NoError(n.t, err, "rabbitmqctl stop: %s", out)
	select {
	case <-n.exited:
	case <-time.After(time.Minute):
		require.FailNow(n.t, "private RabbitMQ node did not exit after rabbitmqctl stop")
	}
	n.cmd = nil
}

// kill is the cleanup: a clean stop, else SIGKILL to the node's process group.
func (n *privateNode) kill() {
	if n.cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctl := exec.CommandContext(ctx, n.ctl, "-n", n.name, "stop")
	ctl.Env = n.env
	_ = ctl.Run()
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	n.cmd = nil
}

// Durable queues and persistent, confirmed messages survive a broker
// restart: nothing published is lost.
//
// Clients are closed before the node stops and reopened after it is back:
// watermill-amqp v3.1.0 reconnects by rewriting its connection fields without
// synchronisation, which the race detector reports as soon as a reconnected
// client is used or closed, so the reconnect path is not exercised here.
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	node := startPrivateNode(t)
	cfg, err := amqp.ParseURL(node.url())
	require.NoError(t, err)
	queue := uniqueQueue("broker_restart")

	published := map[string]bool{}
	pub, err := amqp.NewPublisher(cfg, nil)
	require.NoError(t, err)
	for range 30 {
		m := message.NewMessage(watermill.NewUUID(), []byte("durable"))
		require.NoError(t, pub.Publish(queue, m))
		published[m.UUID] = true
	}
	require.NoError(t, pub.Close())

	// Consume a third; leave one delivered but unacked at Close (requeued).
	sub1, err := amqp.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	ch1, err := sub1.Subscribe(t.Context(), queue)
	require.NoError(t, err)
	acked := map[string]bool{}
	for _, m := range receive(t, ch1, 10, 30*time.Second) {
		acked[m.UUID] = true
	}
	select {
	case <-ch1:
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}
	require.NoError(t, sub1.Close())

	node.stop()
	node.start()

	sub2, err := amqp.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, sub2.Close()) }()
	ch2, err := sub2.Subscribe(t.Context(), queue)
	require.NoError(t, err)
	for _, m := range receive(t, ch2, len(published)-len(acked), time.Minute) {
		require.True(t, published[m.UUID], "unknown message %s", m.UUID)
		require.False(t, acked[m.UUID], "message %s acked before the restart came back", m.UUID)
		acked[m.UUID] = true
	}
	require.Equal(t, published, acked)
}
