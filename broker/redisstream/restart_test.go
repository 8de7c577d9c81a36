package redisstream_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
)

// privateServer is a redis-server of the test's own on a spare port,
// appending every write to its AOF (fsync always) in dir, so streams and
// groups survive a kill.
type privateServer struct {
	t    *testing.T
	dir  string
	port int
	cmd  *exec.Cmd
}

func startPrivateServer(t *testing.T) *privateServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH")
	}
	_ = bin
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	s := &privateServer{t: t, dir: t.TempDir(), port: port}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *privateServer) url() string { return fmt.Sprintf("redis-stream://127.0.0.1:%d/0", s.port) }

func (s *privateServer) start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir)
	require.NoError(s.t, s.cmd.Start())
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port)})
	defer func() { _ = c.Close() }()
	require.Eventually(s.t, func() bool { return c.Ping(context.Background()).Err() == nil },
		15*time.Second, 20*time.Millisecond, "the private redis-server did not answer within 15s")
}

// kill stops the server at once (SIGKILL), as a crash does.
func (s *privateServer) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// TestServerRestart: entries published before and after a crash and
// restart of the server all arrive, those nacked or unsettled at the
// crash come back, and every entry is acknowledged only after success.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	srv := startPrivateServer(t)
	cfg, err := redisstream.ParseURL(srv.url())
	require.NoError(t, err)
	cfg.NackDelay = 50 * time.Millisecond
	cfg.Block = 100 * time.Millisecond
	const stream, n = "orders", 40

	pub := newPublisher(t, cfg)
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			msg := message.NewMessage(fmt.Sprint("m", i), []byte("x"))
			deadline := time.Now().Add(30 * time.Second)
			for {
				err := pub.Publish(stream, msg)
				if err == nil {
					break
				}
				require.True(t, time.Now().Before(deadline), "publishing %s failed for 30s: %v", msg.UUID, err)
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	publish(0, n)

	sub := newSubscriber(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, stream)
	require.NoError(t, err)

	var mu sync.Mutex
	done := map[string]bool{}
	attempts := map[string]int{}
	handled := make(chan struct{}, 4*n)
	go func() {
		for m := range msgs {
			mu.Lock()
			attempts[m.UUID]++
			// Every third message fails its first attempt.
			fail := attempts[m.UUID] == 1 && len(m.UUID)%3 == 0
			if !fail {
				done[m.UUID] = true
			}
			mu.Unlock()
			if fail {
				m.Nack()
			} else {
				m.Ack()
			}
			handled <- struct{}{}
		}
	}()
	waitHandled := func(k int) {
		for range k {
			select {
			case <-handled:
			case <-time.After(30 * time.Second):
				t.Fatal("no message handled within 30s")
			}
		}
	}
	waitHandled(n / 2)
	srv.kill()
	srv.start()
	publish(n, 2*n)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) == 2*n
	}, 60*time.Second, 20*time.Millisecond, "not every message was handled after the restart")
	c := rawClient(t, cfg.URL)
	waitAcked(t, c, stream, redisstream.DefaultConsumerGroup, 30*time.Second)
	length, err := c.XLen(context.Background(), stream).Result()
	require.NoError(t, err)
	require.EqualValues(t, 2*n, length, "the stream lost or doubled entries across the restart")
	cancel()
	require.NoError(t, sub.Close())
}
