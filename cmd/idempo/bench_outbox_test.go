package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// bench --outbox drains the table through a relay and directly, measures
// latency in both phases and counts Write's statements, on SQLite (the
// default) and PostgreSQL, with Kafka in a child process.
func TestBenchOutbox(t *testing.T) {
	for _, tc := range []struct{ name, db string }{
		{"sqlite", ""},
		{"postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{
				"--outbox", "--broker", "kafka", "--events", "600", "--rounds", "2", "--batch", "64",
				"--idle-messages", "20", "--idle-pause", "5ms", "--writers", "2", "--half-rate-for", "500ms",
			}
			if tc.db != "" {
				args = append(args, "--db", tc.db, "--notify")
			}
			rep := benchJSON(t, args...)
			require.EqualValues(t, 600, rep["messages_per_round"])
			require.Contains(t, rep["broker"], "in a child process")
			for _, f := range []string{"direct_msgs_per_s", "relay_msgs_per_s", "ratio_vs_direct_publish"} {
				require.Positive(t, rep[f], f)
			}
			require.Len(t, rep["drain_rounds"], 2)
			for _, phase := range []string{"idle", "half_rate"} {
				l, ok := rep[phase].(map[string]any)
				require.True(t, ok, phase)
				require.Positive(t, l["messages"], phase)
				require.Positive(t, l["achieved_msgs_per_s"], phase)
				require.LessOrEqual(t, l["p50_ms"], l["p99_ms"], phase)
			}
			half := rep["half_rate"].(map[string]any)
			require.Positive(t, half["target_msgs_per_s"])
			require.EqualValues(t, 2, half["writers"])
			st, ok := rep["statements"].(map[string]any)
			require.True(t, ok)
			require.EqualValues(t, 1, st["inserts_many_messages"], "one INSERT for 100 messages: %v", st["statements_many_messages"])
			require.Equal(t, st["one_message"], st["many_messages"], "as many statements for 100 messages as for one: %v", st["statements_many_messages"])
		})
	}
}

func TestBenchOutboxBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--outbox", "--store", "redis://127.0.0.1:6379/0"}, "--outbox does not take --store"},
		{[]string{"bench", "--outbox", "--matrix"}, "--outbox does not take --matrix"},
		{[]string{"bench", "--outbox", "--batch", "0"}, "--batch must be > 0"},
		{[]string{"bench", "--outbox", "--half-rate-for", "0s"}, "--half-rate-for must be > 0"},
		{[]string{"bench", "--outbox", "--poll", "0s"}, "--poll must be > 0"},
		{[]string{"bench", "--outbox", "--db", "redis://x:1/0"}, `unknown scheme "redis"`},
		{[]string{"bench", "--outbox", "--db", "postgres://u:secret@127.0.0.1:1/x", "--events", "10"}, "unreachable"},
		{[]string{"bench", "--db", "postgres://h/db"}, "--db need --outbox"},
		{[]string{"bench", "--notify", "--writers", "3"}, "--notify, --writers need --outbox"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.NotContains(t, out+errOut, "secret")
	}
}
