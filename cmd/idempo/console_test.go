package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/amqpdlq"
)

func TestConsoleHelp(t *testing.T) {
	code, out, errOut := runCLI(t, "console", "--help")
	require.Equal(t, 0, code)
	for _, want := range []string{"Usage: idempo console --broker URL", "--unauthenticated", "--basic-auth-password-env VARIABLE", "--token-env VARIABLE", "--read-only", "--hide-payloads", `--addr string`} {
		require.Contains(t, out+errOut, want)
	}
	_, out, _ = runCLI(t, "help")
	require.Contains(t, out, "console")
}

func TestConsoleBadInput(t *testing.T) {
	t.Setenv("IDEMPO_TEST_CONSOLE_EMPTY", "")
	t.Setenv("IDEMPO_TEST_CONSOLE_PW", "pw")
	store := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	common := []string{"--broker", "amqp://guest:secret@127.0.0.1:1/", "--store", store, "--topic", "t"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"console", "--topic", "t"}, "--broker, --store required"},
		{[]string{"console", "--broker", "kafka://x:1", "--store", store}, "--topic or --topic-suffix required"},
		{[]string{"console", "--unauthenticated", "--broker", dlqTestAMQP, "--store", store, "--topic-suffix", ".dlq"}, "RabbitMQ cannot list its queues"},
		{append([]string{"console"}, common...), "authentication required"},
		{append([]string{"console", "--unauthenticated", "--addr", "0.0.0.0:8080"}, common...), "only on a loopback --addr"},
		{append([]string{"console", "--unauthenticated", "--addr", ":8080"}, common...), "only on a loopback --addr"},
		{append([]string{"console", "--unauthenticated", "--token-env", "X"}, common...), "choose one"},
		{append([]string{"console", "--basic-auth-user", "alice"}, common...), "needs both"},
		{append([]string{"console", "--basic-auth-user", "alice", "--basic-auth-password-env", "IDEMPO_TEST_CONSOLE_EMPTY"}, common...), "empty or unset"},
		{append([]string{"console", "--token-env", "IDEMPO_TEST_CONSOLE_UNSET_VARIABLE"}, common...), "empty or unset"},
		{append([]string{"console", "--unauthenticated", "--addr", "localhost"}, common...), "not host:port"},
		{append([]string{"console", "--unauthenticated", "--refresh", "0s"}, common...), "--refresh must be positive"},
		{[]string{"console", "--unauthenticated", "--broker", "gochannel", "--store", store, "--topic", "t"}, "real broker"},
		{[]string{"console", "--unauthenticated", "--broker", "amqp://guest:secret@127.0.0.1:1/", "--store", "memory", "--topic", "t"}, "vanish"},
		{append([]string{"console", "--basic-auth-user", "alice", "--basic-auth-password-env", "IDEMPO_TEST_CONSOLE_PW"}, common...), "unreachable"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.NotContains(t, errOut, "secret", "passwords are never printed")
	}
}

var (
	csrfField    = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	pendingField = regexp.MustCompile(`name="pending" value="([^"]+)"`)
)

// served is an `idempo console` running in the test.
type served struct {
	t      *testing.T
	base   string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	code   int
	stderr bytes.Buffer
	user   string // basic-auth user ("" for none)
	pass   string
}

// serveConsole runs `idempo console args…` on 127.0.0.1:0 until stop.
func serveConsole(t *testing.T, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{t: t, cancel: cancel}
	urls := make(chan string, 1)
	cmd := &consoleCommand{listening: func(u string) { urls <- u }}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.code = runCommand(ctx, cmd, append(args, "--addr", "127.0.0.1:0", "--refresh", "200ms"), io.Discard, &s.stderr)
		close(urls)
	}()
	select {
	case u, ok := <-urls:
		if !ok {
			cancel()
			s.wg.Wait()
			t.Fatalf("the console ended with status %d: %s", s.code, s.stderr.String())
		}
		s.base = u
	case <-time.After(60 * time.Second):
		cancel()
		s.wg.Wait()
		t.Fatalf("the console did not listen within 60s: %s", s.stderr.String())
	}
	t.Cleanup(func() { s.stop() })
	return s
}

// stop ends the console and returns its exit status.
func (s *served) stop() int {
	s.cancel()
	s.wg.Wait()
	return s.code
}

func (s *served) do(method, path string, form url.Values, auth bool) (int, string) {
	t := s.t
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if auth && s.user != "" {
		req.SetBasicAuth(s.user, s.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// replayThroughConsole waits until the console shows two unresolved
// entries of topic, finds the event evID by search, and replays the entry
// id to dest as the console's operator, who must show as its resolver.
func replayThroughConsole(s *served, topic, id, evID, dest, operator string) {
	t := s.t
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, body := s.do(http.MethodGet, "", nil, true)
		if strings.Contains(body, topic+"</a>: 2 unresolved") {
			require.Contains(t, body, dlq.ReasonPermanent)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the overview never showed the two entries:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	status, body := s.do(http.MethodGet, "dlq/"+topic+"?q="+evID, nil, true)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "Entries 1–1 of 1")
	status, body = s.do(http.MethodGet, "dlq/"+topic+"/entry?id="+url.QueryEscape(id), nil, true)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, evID)

	// Without its CSRF token, a state-changing request is refused.
	status, _ = s.do(http.MethodPost, "dlq/"+topic+"/confirm", url.Values{"action": {"replay"}, "id": {id}}, true)
	require.Equal(t, http.StatusForbidden, status)
	token := csrfField.FindStringSubmatch(body)[1]
	status, body = s.do(http.MethodPost, "dlq/"+topic+"/confirm", url.Values{"action": {"replay"}, "id": {id}, "to": {dest}, "csrf": {token}}, true)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, "1 to replay")
	pending := pendingField.FindStringSubmatch(body)[1]
	// The replay runs as a background job; the client follows to its page.
	status, body = s.do(http.MethodPost, "dlq/"+topic+"/execute", url.Values{"pending": {pending}, "csrf": {token}}, true)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, "The replay of entry "+id)
	deadline = time.Now().Add(60 * time.Second)
	for {
		_, body = s.do(http.MethodGet, "dlq/"+topic+"?all=1&q="+evID, nil, true)
		if strings.Contains(body, "replayed by "+operator) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the entry never showed as replayed by %s:\n%s", operator, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, body = s.do(http.MethodGet, "", nil, true)
	require.Contains(t, body, topic+"</a>: 1 unresolved")
}

// TestConsoleOnKafka serves the console on an embedded Kafka cluster and a
// SQLite store with basic auth, and replays an entry through it as alice.
func TestConsoleOnKafka(t *testing.T) {
	t.Setenv("IDEMPO_TEST_CONSOLE_PW", "pw-123")
	emb, pub := startKafkaDLQ(t)
	id := deadLetter(t, pub, "orders", "billing", "ev-1", `{"n":1}`, permanentFailure())
	deadLetter(t, pub, "orders", "billing", "ev-2", `{"n":2}`, permanentFailure())
	s := serveConsole(t, "--broker", emb.URL(), "--store", "sqlite://"+filepath.Join(t.TempDir(), "r.db"),
		"--topic-suffix", ".dlq", "--basic-auth-user", "alice", "--basic-auth-password-env", "IDEMPO_TEST_CONSOLE_PW")
	s.user, s.pass = "alice", "pw-123"
	status, _ := s.do(http.MethodGet, "", nil, false)
	require.Equal(t, http.StatusUnauthorized, status)
	replayThroughConsole(s, "orders.dlq", id, "ev-1", "orders.retry", "alice")
	require.Equal(t, 0, s.stop(), s.stderr.String())
	require.NotContains(t, s.stderr.String(), "pw-123")
}

// TestConsoleOnRabbitMQ serves an unauthenticated console (loopback) on a
// RabbitMQ stream DLQ, and replays an entry through it as --operator.
func TestConsoleOnRabbitMQ(t *testing.T) {
	orig := "idempo_clitest_console_" + watermill.NewShortUUID()
	topic := orig + ".dlq"
	conn, err := amqp091.Dial(dlqTestAMQP)
	require.NoError(t, err, "RabbitMQ is required at %s", dlqTestAMQP)
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			for _, q := range []string{orig, orig + ".retry", topic} {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
		}
		_ = conn.Close()
	})
	pub, err := amqpdlq.NewDLQPublisher(amqp.Config{URL: dlqTestAMQP}, nil)
	require.NoError(t, err)
	defer pub.Close()
	id := deadLetter(t, pub, orig, "billing", "ev-r1", `{"n":1}`, permanentFailure())
	deadLetter(t, pub, orig, "billing", "ev-r2", `{"n":2}`, permanentFailure())
	s := serveConsole(t, "--broker", dlqTestAMQP, "--store", "sqlite://"+filepath.Join(t.TempDir(), "r.db"),
		"--topic", topic, "--unauthenticated", "--operator", "oncall")
	replayThroughConsole(s, topic, id, "ev-r1", orig+".retry", "oncall")
	require.Equal(t, 0, s.stop(), s.stderr.String())
	require.NotContains(t, s.stderr.String(), "guest:guest")
}
