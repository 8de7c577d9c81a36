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

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq"
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
		{[]string{"console", "--broker", "kafka://x:1", "--store", store}, "--topic required"},
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

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestConsoleOnKafka serves the console on an embedded Kafka cluster and a
// SQLite store, and replays an entry through it over HTTP as alice.
func TestConsoleOnKafka(t *testing.T) {
	t.Setenv("IDEMPO_TEST_CONSOLE_PW", "pw-123")
	emb, pub := startKafkaDLQ(t)
	id := deadLetter(t, pub, "orders", "billing", "ev-1", `{"n":1}`, permanentFailure())
	deadLetter(t, pub, "orders", "billing", "ev-2", `{"n":2}`, permanentFailure())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	urls := make(chan string, 1)
	cmd := &consoleCommand{listening: func(u string) { urls <- u }}
	var (
		wg     sync.WaitGroup
		code   int
		stderr bytes.Buffer
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		code = runCommand(ctx, cmd, []string{
			"--broker", emb.URL(), "--store", "sqlite://" + filepath.Join(t.TempDir(), "r.db"),
			"--topic", "orders.dlq", "--addr", "127.0.0.1:0", "--refresh", "200ms",
			"--basic-auth-user", "alice", "--basic-auth-password-env", "IDEMPO_TEST_CONSOLE_PW",
		}, io.Discard, &stderr)
	}()
	var base string
	select {
	case base = <-urls:
	case <-time.After(60 * time.Second):
		cancel()
		wg.Wait()
		t.Fatalf("the console did not listen within 60s: %s", stderr.String())
	}
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, path string, form url.Values, auth bool) (int, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, body)
		require.NoError(t, err)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if auth {
			req.SetBasicAuth("alice", "pw-123")
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	status, _ := do(http.MethodGet, "", nil, false)
	require.Equal(t, http.StatusUnauthorized, status)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, body := do(http.MethodGet, "", nil, true)
		if strings.Contains(body, "orders.dlq</a>: 2 unresolved") {
			require.Contains(t, body, dlq.ReasonPermanent)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the overview never showed the two entries:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	status, body := do(http.MethodGet, "dlq/orders.dlq?q=ev-1", nil, true)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "Entries 1–1 of 1")
	status, body = do(http.MethodGet, "dlq/orders.dlq/entry/"+url.PathEscape(id), nil, true)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, "&#34;n&#34;: 1")

	// Without its CSRF token, a state-changing request is refused.
	status, _ = do(http.MethodPost, "dlq/orders.dlq/confirm", url.Values{"action": {"replay"}, "id": {id}}, true)
	require.Equal(t, http.StatusForbidden, status)
	token := csrfField.FindStringSubmatch(body)[1]
	status, body = do(http.MethodPost, "dlq/orders.dlq/confirm", url.Values{"action": {"replay"}, "id": {id}, "to": {"orders.retry"}, "csrf": {token}}, true)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, "1 to replay")
	pending := regexp.MustCompile(`name="pending" value="([^"]+)"`).FindStringSubmatch(body)[1]
	status, body = do(http.MethodPost, "dlq/orders.dlq/execute", url.Values{"pending": {pending}, "csrf": {token}}, true)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, "1 replayed")
	_, body = do(http.MethodGet, "dlq/orders.dlq?all=1&q=ev-1", nil, true)
	require.Contains(t, body, "replayed by alice")

	cancel()
	wg.Wait()
	require.Equal(t, 0, code, stderr.String())
	require.NotContains(t, stderr.String(), "pw-123")
}
