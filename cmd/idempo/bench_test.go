package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// benchJSON runs bench with --json and returns the one object it printed.
func benchJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"bench", "--json"}, args...)...)
	require.Equal(t, 0, code, "stderr: %s", errOut)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "exactly one JSON object")
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	return rep
}

func TestBenchJSON(t *testing.T) {
	rep := benchJSON(t, "--events", "2000", "--rounds", "1")
	require.EqualValues(t, 2000, rep["events_per_round"])
	require.EqualValues(t, 1, rep["rounds"])
	require.Contains(t, rep["broker"], "gochannel")
	require.Contains(t, rep["store"], "memory")
	variants, ok := rep["variants"].(map[string]any)
	require.True(t, ok, "variants is an object")
	for _, name := range []string{"bare", "watermill", "idempo"} {
		v, ok := variants[name].(map[string]any)
		require.True(t, ok, name)
		require.EqualValues(t, 2000, v["messages"], name)
		require.EqualValues(t, 0, v["redeliveries"], name)
		for _, f := range []string{"events_per_s", "ns_per_msg", "elapsed_ms", "allocs_per_msg", "bytes_per_msg", "max_us"} {
			require.Positive(t, v[f], "%s.%s", name, f)
		}
		for _, f := range []string{"p50_us", "p99_us"} {
			require.Contains(t, v, f, name)
		}
		require.LessOrEqual(t, v["p50_us"], v["p99_us"], name)
		require.Len(t, v["rounds"], 1, name)
	}
	require.Positive(t, rep["ratio_vs_bare"])
	require.Positive(t, rep["ratio_vs_watermill"])
	machine, ok := rep["machine"].(map[string]any)
	require.True(t, ok)
	for _, f := range []string{"num_cpu", "goos", "goarch", "go_version", "date"} {
		require.NotEmpty(t, machine[f], f)
	}
	require.NotContains(t, rep, "memory", "no memory figures without --memory")
}

// With --ordering key on Kafka the report has a sequential variant (idempo
// in partition order) and ratio_vs_sequential.
func TestBenchKeyOrderOnKafka(t *testing.T) {
	rep := benchJSON(t, "--broker", "kafka", "--ordering", "key", "--partitions", "2", "--keys", "50",
		"--work", "1ms", "--events", "400", "--rounds", "1", "--warmup", "0")
	require.Equal(t, "key", rep["ordering"])
	require.Contains(t, rep["broker"], "in a child process", "bare is a broker over a socket, not in this process")
	require.EqualValues(t, 2, rep["partitions"])
	require.EqualValues(t, 50, rep["keys"])
	require.EqualValues(t, 1, rep["work_ms"])
	variants, ok := rep["variants"].(map[string]any)
	require.True(t, ok, "variants is an object")
	seq, ok := variants["sequential"].(map[string]any)
	require.True(t, ok, "a sequential variant")
	require.EqualValues(t, 400, seq["messages"])
	require.Positive(t, rep["ratio_vs_sequential"])
	idempo, ok := variants["idempo"].(map[string]any)
	require.True(t, ok, "an idempo variant")
	require.Contains(t, idempo, "lease_lost", "every run reports the leases the stack lost")
	require.EqualValues(t, 0, idempo["lease_lost"], "no lease lost: the stack holds no more claims than the store serves")
	require.EqualValues(t, 0, seq["lease_lost"])
	require.Positive(t, idempo["cpu_us_per_msg"], "CPU time per message is reported")
}

func TestBenchTableOutput(t *testing.T) {
	code, out, errOut := runCLI(t, "bench", "--events", "300", "--rounds", "1", "--warmup", "0")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "broker: gochannel (in-process), store: memory (in-process)")
	for _, want := range []string{"variant", "events/s", "p99", "allocs/msg", "bare", "watermill", "idempo", "idempo costs", "machine:"} {
		require.Contains(t, out, want)
	}
}

func TestBenchHelp(t *testing.T) {
	for _, args := range [][]string{{"bench", "--help"}, {"bench", "-h"}} {
		code, out, errOut := runCLI(t, args...)
		require.Equal(t, 0, code, "%v", args)
		require.Contains(t, out+errOut, "Usage: idempo bench")
		require.Contains(t, out+errOut, "--matrix")
	}
}

func TestBenchBadInputIsAClearError(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--broker", "mqtt://x"}, `unknown scheme "mqtt"`},
		{[]string{"bench", "--store", "redis://"}, "no host"},
		{[]string{"bench", "--store", "postgres://u:secret@%zz/db"}, "invalid URL"},
		{[]string{"bench", "--matrix", "--stores", "memory,mongodb://u:secret@h/db"}, `unknown scheme "mongodb"`},
		{[]string{"bench", "--events", "0"}, "--events must be > 0"},
		{[]string{"bench", "--rounds", "0"}, "without --memory"},
		{[]string{"bench", "--consumers", "0"}, "--consumers must be > 0"},
		{[]string{"bench", "--matrix", "--store", "memory"}, "--matrix takes --brokers and --stores"},
		{[]string{"bench", "--matrix", "--inbox"}, "--inbox runs one store"},
		{[]string{"bench", "--inbox", "--store", "memory"}, "--inbox needs a SQL store"},
		{[]string{"bench", "extra"}, "unexpected arguments"},
		{[]string{"bench", "--ordering", "total"}, `--ordering "total" is not partition, key or unordered`},
		{[]string{"bench", "--partitions", "0"}, "--partitions must be > 0"},
		{[]string{"bench", "--keys", "0"}, "--keys must be > 0"},
		{[]string{"bench", "--work", "-1ms"}, "--work must be >= 0"},
		{[]string{"bench", "--store", "redis://127.0.0.1:1/0", "--events", "10"}, "unreachable"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.NotContains(t, errOut, "secret", "passwords are never printed")
	}
}

func TestBenchOnRedis(t *testing.T) {
	rep := benchJSON(t, "--store", "redis://127.0.0.1:6379/0", "--events", "500", "--rounds", "1", "--warmup", "100", "--memory")
	require.Contains(t, rep["store"], "redis://127.0.0.1:6379/0")
	idempo := rep["variants"].(map[string]any)["idempo"].(map[string]any)
	require.EqualValues(t, 500, idempo["messages"])
	require.Positive(t, idempo["store_server_us_per_msg"], "Redis's CPU per message, from INFO commandstats")
	require.Positive(t, rep["floor_events_per_s"], "the store alone at the same concurrency")
	require.Positive(t, rep["ratio_vs_floor"])
	require.GreaterOrEqual(t, idempo["calls_per_round_trip"], 1.0, "the mean pipeline")
	require.Positive(t, idempo["peak_in_flight"])
	require.Positive(t, rep["ratio_vs_bare"])
	require.Positive(t, rep["ratio_vs_watermill"])
	mem, ok := rep["memory"].(map[string]any)
	require.True(t, ok, "--memory reports the store's figures")
	require.Equal(t, "redis", mem["store"])
	require.Equal(t, "done", mem["state"])
	require.Positive(t, mem["bytes_per_key"])
}

func TestBenchMatrix(t *testing.T) {
	code, out, errOut := runCLI(t, "bench", "--matrix", "--events", "200", "--rounds", "1", "--warmup", "0",
		"--brokers", "gochannel", "--stores", "memory,redis://127.0.0.1:1/0")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "Command: `idempo bench --matrix --events 200 --rounds 1 --warmup 0 --brokers gochannel --stores memory,redis://127.0.0.1:1/0`")
	require.Contains(t, out, "Machine: ")
	require.Contains(t, out, "| broker | ordering | store | bare ev/s |")
	require.Contains(t, out, "| gochannel | — | memory | ")
	require.Contains(t, out, "| gochannel | — | redis://127.0.0.1:1/0 | skipped |")
	require.Contains(t, out, "unreachable")
}

func TestBenchCommandLineRedactsAndQuotes(t *testing.T) {
	require.Equal(t, "idempo bench --matrix --brokers gochannel,amqp://guest:xxxxx@h:5672/ '--stores=postgres://u@h/db?sslmode=disable&x=1'",
		commandLine([]string{"--matrix", "--brokers", "gochannel,amqp://guest:guest@h:5672/", "--stores=postgres://u@h/db?sslmode=disable&x=1"}))
}

// --inbox on PostgreSQL: the business transaction without dedup against the
// transactional inbox, and the share of its throughput the inbox keeps.
func TestBenchInbox(t *testing.T) {
	rep := benchJSON(t, "--store", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "--inbox", "--events", "300", "--rounds", "1", "--warmup", "0", "--in-flight", "8")
	vs := rep["variants"].(map[string]any)
	require.EqualValues(t, 300, vs["no_inbox"].(map[string]any)["messages"])
	idempo := vs["idempo"].(map[string]any)
	require.EqualValues(t, 300, idempo["messages"])
	require.GreaterOrEqual(t, idempo["claim_rows_per_statement"], 1.0)
	require.Positive(t, rep["ratio_vs_no_inbox"])
}
