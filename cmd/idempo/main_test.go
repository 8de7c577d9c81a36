package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/middleware"
)

// TestMain doubles as the idempo binary: verify starts consumer processes
// by re-executing the test binary with IDEMPO_TEST_CLI=1.
func TestMain(m *testing.M) {
	if os.Getenv("IDEMPO_TEST_CLI") == "1" {
		main()
	}
	// Consumer processes that verify starts from any test re-execute this
	// binary, which then acts as the CLI.
	_ = os.Setenv("IDEMPO_TEST_CLI", "1")
	// sarama's metrics registry starts a meter goroutine that never stops.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestDemoJSONOnSeveralSeeds(t *testing.T) {
	for _, seed := range []string{"1", "2", "3"} {
		t.Run("seed"+seed, func(t *testing.T) {
			code, out, errOut := runCLI(t, "demo", "--json", "--events", "3000", "--seed", seed, "--store", "memory",
				"--dup-rate", "0.2", "--ack-loss-rate", "0.05", "--fail-rate", "0.1", "--poison-rate", "0.02", "--panic-rate", "0.02")
			require.Equal(t, 0, code, "stderr: %s", errOut)
			require.Contains(t, errOut, "broker: gochannel (in-process), store: memory", "a start line names the broker and the store")
			require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "exactly one JSON object")
			var l map[string]any
			require.NoError(t, json.Unmarshal([]byte(out), &l))
			for _, f := range []string{
				"published", "unique_events", "deliveries", "effects", "duplicates_skipped", "retries",
				"dead_lettered", "expected_dead_lettered", "lost", "double_effects", "elapsed_ms",
			} {
				require.Contains(t, l, f)
			}
			require.EqualValues(t, 3000, l["unique_events"])
			require.EqualValues(t, 0, l["lost"])
			require.EqualValues(t, 0, l["double_effects"])
			require.Equal(t, l["expected_dead_lettered"], l["dead_lettered"])
			require.Positive(t, l["expected_dead_lettered"])
			require.Positive(t, l["duplicates_skipped"])
			require.Positive(t, l["retries"])
			require.Greater(t, l["published"], l["unique_events"])
		})
	}
}

func TestDemoTableOutput(t *testing.T) {
	code, out, errOut := runCLI(t, "demo", "--events", "500")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `store: sqlite:///.*/demo-[0-9a-f]{8}\.db`, errOut, "SQLite in the cache dir is the embedded default")
	require.Contains(t, out, "double_effects")
	require.Contains(t, out, "OK:")
}

// A stack broken on purpose (handler outputs nothing is wrong here; we make
// the ledger see a double effect by disabling dedup via a fresh scope per
// consumer) must make the demo fail with exit status 1.
func TestDemoFailsWhenDedupIsBroken(t *testing.T) {
	l, err := demo.Run(context.Background(), demo.Options{
		Events: 300, Faults: demo.DefaultFaults, Consumers: 2, Store: "memory",
		StackHook: func(c *middleware.Config) { c.Scope = "" }, // scope per handler: each consumer processes every event
	})
	require.NoError(t, err)
	require.ErrorIs(t, l.Verdict(), demo.ErrVerdict)
	require.Positive(t, l.DoubleEffects)
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"demo", "--help"}, {"demo", "-h"}} {
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 0, code, "%v", args)
		require.NotEmpty(t, out+errOut)
	}
}

func TestBadInputIsAClearError(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--broker", "mqtt://x"}, `unknown scheme "mqtt"`},
		{[]string{"demo", "--store", "redis://"}, "no host"},
		{[]string{"demo", "--store", "postgres://u:secret@%zz/db"}, "invalid URL"},
		{[]string{"demo", "--events", "0"}, "--events must be > 0"},
		{[]string{"demo", "--dup-rate", "1.5"}, "--dup-rate must be between 0 and 1"},
		{[]string{"demo", "--consumers", "0"}, "--consumers"},
		{[]string{"nope"}, "unknown command"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.NotContains(t, errOut, "secret", "passwords are never printed")
	}
}

// The demo keeps its ledger and exit rules on every real store.
func TestDemoOnRealBrokers(t *testing.T) {
	for _, broker := range []string{"kafka", "amqp://guest:guest@127.0.0.1:5672/", natsURL, "redis-stream://127.0.0.1:6379/0"} {
		t.Run(broker, func(t *testing.T) {
			code, out, errOut := runCLI(t, "demo", "--json", "--events", "1500", "--broker", broker)
			require.Equal(t, 0, code, "stderr: %s", errOut)
			var l demo.Ledger
			require.NoError(t, json.Unmarshal([]byte(out), &l))
			require.NoError(t, l.Verdict())
			require.Positive(t, l.DuplicatesSkipped)
			require.NotContains(t, errOut, "guest:guest", "the password is redacted")
		})
	}
}

func TestDemoOnRealStores(t *testing.T) {
	for _, store := range []string{"redis://127.0.0.1:6379/0", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "mysql://root@127.0.0.1:3306/test"} {
		t.Run(store, func(t *testing.T) {
			code, out, errOut := runCLI(t, "demo", "--json", "--events", "1000", "--store", store)
			require.Equal(t, 0, code, "stderr: %s", errOut)
			var l demo.Ledger
			require.NoError(t, json.Unmarshal([]byte(out), &l))
			require.NoError(t, l.Verdict())
			require.Equal(t, 1000, l.UniqueEvents)
		})
	}
}

func TestDemoUnreachableStoreIsAClearError(t *testing.T) {
	code, _, errOut := runCLI(t, "demo", "--events", "10", "--store", "redis://127.0.0.1:1/0")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "unreachable")
}
