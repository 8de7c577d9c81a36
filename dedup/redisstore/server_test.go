package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
)

// privateServer is a redis-server of the test's own, on a free port, that
// the test may kill, pause and restart. The shared server is never touched.
type privateServer struct {
	tb    testing.TB
	port  int
	dir   string
	extra []string
	cmd   *exec.Cmd
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(tb, l.Close())
	return port
}

func startPrivateServer(tb testing.TB, extra ...string) *privateServer {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("this test starts its own redis-server, which is not on PATH: %v", err)
	}
	s := &privateServer{tb: tb, port: freePort(tb), dir: tb.TempDir(), extra: extra}
	s.start()
	tb.Cleanup(s.stop)
	return s
}

func (s *privateServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *privateServer) start() {
	s.tb.Helper()
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
	}, s.extra...)
	s.cmd = exec.Command("redis-server", args...)
	require.NoError(s.tb, s.cmd.Start())
	probe := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer probe.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := probe.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("private redis-server on %s did not answer: %v", s.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the server at once (SIGKILL), as a crash would.
func (s *privateServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *privateServer) stop() { s.kill() }

func (s *privateServer) signal(sig os.Signal) {
	s.tb.Helper()
	require.NoError(s.tb, s.cmd.Process.Signal(sig))
}

func privateClient(tb testing.TB, s *privateServer, opts *redis.Options) *redis.Client {
	if opts == nil {
		opts = &redis.Options{}
	}
	opts.Addr = s.addr()
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// TestOutageReturnsErrorsThenRecovers kills the server under the store and
// brings it back on the same port: while it is down every call fails (never a
// fake success); once it is back, calls succeed again by themselves.
func TestOutageReturnsErrorsThenRecovers(t *testing.T) {
	t.Parallel()
	srv := startPrivateServer(t)
	c := privateClient(t, srv, &redis.Options{
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
		DialTimeout:           500 * time.Millisecond,
		ReadTimeout:           500 * time.Millisecond,
		WriteTimeout:          500 * time.Millisecond,
	})
	hook := &commandCounter{}
	c.AddHook(hook)
	st, err := redisstore.New(c, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	held := map[dedup.Key]dedup.Token{}
	for i := range 20 {
		k := dedup.Key{Scope: "outage", ID: fmt.Sprintf("before-%d", i)}
		r := claimReq(time.Minute, time.Hour)
		res, err := st.Claim(ctx, k, r)
		require.NoError(t, err)
		require.Equal(t, dedup.StatusAcquired, res.Status)
		held[k] = r.Token
	}

	srv.kill()
	for i := range 5 {
		k := dedup.Key{Scope: "outage", ID: fmt.Sprintf("during-%d", i)}
		res, err := st.Claim(ctx, k, claimReq(time.Minute, time.Hour))
		require.Error(t, err, "a claim while Redis is down must fail")
		require.NotEqual(t, dedup.StatusAcquired, res.Status)
		require.Contains(t, err.Error(), "redisstore: claim outage/during-")
	}
	for k, tok := range held {
		require.Error(t, st.Complete(ctx, k, tok, time.Hour), "a completion while Redis is down must fail")
		require.Error(t, st.Extend(ctx, k, tok, time.Minute))
		require.Error(t, st.Release(ctx, k, tok, false))
		break
	}

	// Back on the same port, empty (it keeps nothing on disk) and without the
	// scripts: the store reconnects and re-sends them with EVAL by itself.
	srv.start()
	hook.take()
	k := dedup.Key{Scope: "outage", ID: "after"}
	r := claimReq(time.Minute, time.Hour)
	var res dedup.ClaimResult
	require.Eventually(t, func() bool {
		res, err = st.Claim(ctx, k, r)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "claims succeed again once Redis is back: %v", err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	require.Equal(t, 1, res.Deliveries)
	require.Contains(t, hook.take(), "eval", "the script cache was empty, so EVAL followed NOSCRIPT")
	require.NoError(t, st.Complete(ctx, k, r.Token, time.Hour))
	res, err = st.Claim(ctx, k, claimReq(time.Minute, time.Hour))
	require.NoError(t, err)
	require.Equal(t, dedup.StatusDone, res.Status)

	// The scripts are cached again: one command per call.
	hook.take()
	k2 := dedup.Key{Scope: "outage", ID: "after-2"}
	r2 := claimReq(time.Minute, time.Hour)
	_, err = st.Claim(ctx, k2, r2)
	require.NoError(t, err)
	require.NoError(t, st.Complete(ctx, k2, r2.Token, time.Hour))
	require.Equal(t, []string{"evalsha", "evalsha"}, hook.take())
}

func TestHungServerTimesOut(t *testing.T) {
	t.Parallel()
	srv := startPrivateServer(t)
	c := privateClient(t, srv, &redis.Options{
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		ReadTimeout:           200 * time.Millisecond,
		WriteTimeout:          200 * time.Millisecond,
	})
	st, err := redisstore.New(c, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	warm := dedup.Key{Scope: "hung", ID: "warm"}
	_, err = st.Claim(ctx, warm, claimReq(time.Minute, time.Hour))
	require.NoError(t, err)

	srv.signal(syscall.SIGSTOP)
	k := dedup.Key{Scope: "hung", ID: "event"}
	r := claimReq(time.Minute, time.Hour)
	res, err := st.Claim(ctx, k, r)
	require.Error(t, err, "a claim the server does not answer must fail")
	require.NotEqual(t, dedup.StatusAcquired, res.Status)
	var nerr net.Error
	require.True(t, errors.As(err, &nerr) && nerr.Timeout(), "a timeout, got %v", err)

	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = st.Claim(dctx, dedup.Key{Scope: "hung", ID: "deadline"}, claimReq(time.Minute, time.Hour))
	dcancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	srv.signal(syscall.SIGCONT)
	require.Eventually(t, func() bool {
		res, err = st.Claim(ctx, k, r)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "claims succeed again once Redis resumes: %v", err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	require.Equal(t, 1, res.Deliveries, "the retried claim by the same token counts once")
	require.NoError(t, st.Complete(ctx, k, r.Token, time.Hour))
}

func TestEvictionPolicyCheck(t *testing.T) {
	t.Parallel()
	srv := startPrivateServer(t, "--maxmemory-policy", "allkeys-lru")
	c := privateClient(t, srv, nil)
	ctx := context.Background()

	_, err := redisstore.New(c, nil)
	require.ErrorIs(t, err, redisstore.ErrEvictionPolicy)
	var perr *redisstore.EvictionPolicyError
	require.ErrorAs(t, err, &perr)
	require.Equal(t, "allkeys-lru", perr.Policy)
	require.Equal(t, srv.addr(), perr.Addr)
	require.ErrorContains(t, err, `"allkeys-lru"`)
	require.ErrorContains(t, err, "CONFIG SET maxmemory-policy noeviction", "the error names the fix")

	// Every key has a TTL, so volatile-* policies are refused as well.
	require.NoError(t, c.ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err())
	_, err = redisstore.New(c, nil)
	require.ErrorAs(t, err, &perr)
	require.Equal(t, "volatile-lru", perr.Policy)

	// Warn only: New succeeds and says why it is unsafe.
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	st, err := redisstore.New(c, &redisstore.Options{EvictionPolicyCheck: redisstore.EvictionCheckWarn, Logger: logger})
	require.NoError(t, err)
	require.NotNil(t, st)
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "policy=volatile-lru")

	// Off: not even asked.
	_, err = redisstore.New(c, &redisstore.Options{EvictionPolicyCheck: redisstore.EvictionCheckOff})
	require.NoError(t, err)

	require.NoError(t, c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	_, err = redisstore.New(c, nil)
	require.NoError(t, err)

	// A managed Redis that refuses CONFIG: warn, do not fail.
	require.NoError(t, c.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	require.NoError(t, c.Do(ctx, "ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-config").Err())
	limited := privateClient(t, srv, &redis.Options{Username: "app", Password: "secret"})
	logs = syncBuffer{}
	_, err = redisstore.New(limited, &redisstore.Options{Logger: logger})
	require.NoError(t, err, "a refused CONFIG GET is a warning, not a failure")
	require.Contains(t, logs.String(), "could not check maxmemory-policy")
	require.Contains(t, logs.String(), "NOPERM")
}

func TestNewWhenRedisIsUnreachable(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	_, err := redisstore.New(c, nil)
	require.ErrorContains(t, err, "check maxmemory-policy", "by default New fails fast")

	var logs syncBuffer
	_, err = redisstore.New(c, &redisstore.Options{EvictionPolicyCheck: redisstore.EvictionCheckWarn, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	require.Contains(t, logs.String(), "could not check maxmemory-policy")
	_, err = redisstore.New(c, &redisstore.Options{EvictionPolicyCheck: redisstore.EvictionCheckOff})
	require.NoError(t, err)
}
