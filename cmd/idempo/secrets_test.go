package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// newSecret returns a fresh secret that appears nowhere else.
func newSecret(t *testing.T) string {
	t.Helper()
	var b [8]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "Sx" + hex.EncodeToString(b[:])
}

// credentialForms are the ways the drivers accept a credential. %s is the
// secret. Unreachable hosts (port 1) fail fast; the reachable ones hold a
// wrong secret (RabbitMQ) or one the server ignores (PostgreSQL trusts
// local connections, so the run succeeds and prints its ledger).
var credentialForms = []struct {
	name, flag, form string
}{
	{"postgres-userinfo", "store", "postgres://u:%s@127.0.0.1:1/x"},
	{"postgres-query", "store", "postgres://127.0.0.1:1/x?password=%s&user=u"},
	{"postgres-keyvalue", "store", "host=127.0.0.1 port=1 password=%s user=u"},
	{"postgres-keyvalue-quoted", "store", "host=127.0.0.1 port=1 password='a b %s' user=u"},
	{"postgres-trusted", "store", "postgres://postgres:%s@127.0.0.1:5432/test?sslmode=disable"},
	{"mysql-dsn", "store", "u:%s@tcp(127.0.0.1:1)/db"},
	{"mysql-url", "store", "mysql://u:%s@127.0.0.1:1/db"},
	{"redis-password", "store", "redis://:%s@127.0.0.1:1/0"},
	{"redis-user-password", "store", "redis://user:%s@127.0.0.1:1/0"},
	{"amqp-unreachable", "broker", "amqp://u:%s@127.0.0.1:1/"},
	{"amqp-wrong-password", "broker", "amqp://guest:%s@127.0.0.1:5672/"},
	{"kafka-userinfo", "broker", "kafka://u:%s@127.0.0.1:1"},
}

// TestSecretsAreNeverPrinted runs every command that takes a URL with each
// credential form, plain, with --json and with a bad flag, and finds the
// secret in no output.
func TestSecretsAreNeverPrinted(t *testing.T) {
	for _, cf := range credentialForms {
		t.Run(cf.name, func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			val := fmt.Sprintf(cf.form, secret)
			// The other side of each command: reachable and credential-free.
			broker, store := rabbitURL, "sqlite://"+filepath.Join(t.TempDir(), "r.db")
			if cf.flag == "broker" {
				broker = val
			} else {
				store = val
			}
			dlq := []string{"--broker", broker, "--store", store, "--topic", "idempo-secret-test.dlq", "--timeout", "20s"}
			commands := [][]string{
				{"demo", "--events", "20", "--" + cf.flag, val},
				{"verify", "--events", "20", "--kills", "0", "--broker", broker, "--store", store, "--timeout", "1m"},
				{"bench", "--events", "20", "--rounds", "1", "--warmup", "0", "--" + cf.flag, val},
				{"bench", "--matrix", "--events", "20", "--rounds", "1", "--warmup", "0", "--" + cf.flag + "s", "memory,gochannel," + val},
				append([]string{"dlq", "list"}, dlq...),
				append([]string{"dlq", "show", "some-id"}, dlq...),
				append([]string{"dlq", "replay", "--all-unresolved"}, dlq...),
				append([]string{"dlq", "purge", "--all-unresolved", "--yes"}, dlq...),
			}
			if cf.flag == "broker" {
				commands[3][8] = "--brokers"
				commands[3][9] = "gochannel," + val
			} else {
				commands[3][9] = "memory," + val
			}
			for _, args := range commands {
				for _, extra := range [][]string{nil, {"--json"}, {"--no-such-flag"}} {
					args := append(append([]string{}, args...), extra...)
					code, out, errOut := runCLI(t, args...)
					shown := strings.Join(args, " ")
					require.NotContains(t, out, secret, "stdout of %s (exit %d)", shown, code)
					require.NotContains(t, errOut, secret, "stderr of %s (exit %d)", shown, code)
					if extra != nil && extra[0] == "--no-such-flag" {
						require.Equal(t, 2, code, "%s", shown)
					}
					t.Logf("%s: exit %d", shown, code)
				}
			}
		})
	}
}

// TestSecretsAreNeverPrintedByTheProcess runs the CLI as a process of its
// own with each credential form, so that whatever a driver writes to the
// process's stderr by itself is checked too.
func TestSecretsAreNeverPrintedByTheProcess(t *testing.T) {
	for _, cf := range credentialForms {
		t.Run(cf.name, func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			val := fmt.Sprintf(cf.form, secret)
			for _, args := range [][]string{
				{"demo", "--events", "20", "--" + cf.flag, val},
				{"bench", "--json", "--events", "20", "--rounds", "1", "--warmup", "0", "--" + cf.flag, val},
			} {
				cmd := exec.Command(os.Args[0], args...)
				cmd.Env = append(os.Environ(), "IDEMPO_TEST_CLI=1")
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				done := make(chan error, 1)
				require.NoError(t, cmd.Start())
				go func() { done <- cmd.Wait() }()
				select {
				case <-done:
				case <-time.After(2 * time.Minute):
					_ = cmd.Process.Kill()
					<-done
					t.Fatalf("%v did not end within 2 minutes; stderr:\n%s", args, stderr.String())
				}
				require.NotContains(t, stdout.String(), secret, "stdout of %v", args)
				require.NotContains(t, stderr.String(), secret, "stderr of %v", args)
			}
		})
	}
}
