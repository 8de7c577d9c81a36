package nats_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/nats"
)

// privateServer is a nats-server of the test's own, on a spare port with
// its store in a temporary directory, so restarting it never touches the
// shared server.
type privateServer struct {
	t      *testing.T
	port   int
	dir    string
	cmd    *exec.Cmd
	exited chan error
	out    *bytes.Buffer
}

const natsServerBin = "/usr/sbin/nats-server"

func startPrivateServer(t *testing.T) *privateServer {
	t.Helper()
	_, err := os.Stat(natsServerBin)
	require.NoError(t, err, "the restart test runs a private server and needs %s", natsServerBin)
	s := &privateServer{t: t, port: sparePort(t), dir: t.TempDir()}
	t.Cleanup(s.kill)
	s.start()
	return s
}

func sparePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *privateServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *privateServer) start() {
	s.t.Helper()
	s.out = &bytes.Buffer{}
	cmd := exec.Command(natsServerBin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-sd", s.dir)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(s.t, cmd.Start())
	s.cmd = cmd
	s.exited = make(chan error, 1)
	go func(exited chan<- error) { exited <- cmd.Wait() }(s.exited)
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			_ = conn.Close()
			return
		}
		select {
		case err := <-s.exited:
			s.cmd = nil
			require.FailNowf(s.t, "private nats-server exited", "%v: %s", err, s.out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			require.FailNowf(s.t, "private nats-server did not start", "%s", s.out)
		}
	}
}

// stop sends SIGTERM and waits for the server to exit.
func (s *privateServer) stop() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		require.FailNow(s.t, "private nats-server did not exit after SIGTERM")
	}
	s.cmd = nil
}

func (s *privateServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// Streams are file-backed and acks explicit: a server stopped (SIGTERM) and
// restarted on the same port and store mid-run loses nothing. The clients
// stay open across the restart and reconnect; messages published before
// and after all arrive, and a message is acked only after it was handled.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	srv := startPrivateServer(t)
	cfg, err := nats.ParseURL(srv.url())
	require.NoError(t, err)
	cfg.AckWait, cfg.Lease = 2*time.Second, 2*time.Second // redeliver unacked messages soon after the restart
	cfg.Consumers = 2                                     // one worker holds a message across the restart
	topic := uniqueTopic("restart")

	pub, err := nats.NewPublisher(cfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, pub.Close()) }()
	sub, err := nats.NewSubscriber(cfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, sub.Close()) }()

	published := map[string]bool{}
	publish := func(n int) {
		for range n {
			m := message.NewMessage(watermill.NewUUID(), []byte("durable"))
			// Publish fails while the server is still coming back: retry,
			// the duplicate window drops a copy stored before a lost ack.
			deadline := time.Now().Add(time.Minute)
			for {
				err := pub.Publish(topic, m)
				if err == nil {
					break
				}
				require.True(t, time.Now().Before(deadline), "publish kept failing: %v", err)
				time.Sleep(200 * time.Millisecond)
			}
			published[m.UUID] = true
		}
	}
	publish(30)

	ch := subscribe(t, sub, topic)
	var mu sync.Mutex
	acked := map[string]bool{}
	for _, m := range receive(t, ch, 10, 30*time.Second) {
		acked[m.UUID] = true
	}
	// One delivered but not acked when the server stops: it must come back.
	var held *message.Message
	select {
	case held = <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}

	srv.stop()
	srv.start()
	publish(20)

	deadline := time.After(2 * time.Minute)
	for {
		mu.Lock()
		done := len(acked) == len(published)
		mu.Unlock()
		if done {
			break
		}
		select {
		case m, ok := <-ch:
			require.True(t, ok, "the subscription closed")
			require.True(t, published[m.UUID], "unknown message %s", m.UUID)
			m.Ack()
			mu.Lock()
			acked[m.UUID] = true
			mu.Unlock()
		case <-deadline:
			require.FailNowf(t, "messages lost", "%d of %d arrived after the restart", len(acked), len(published))
		}
	}
	require.Equal(t, published, acked)
	require.True(t, acked[held.UUID], "the message held unacked across the restart came back")
	held.Ack()
}
