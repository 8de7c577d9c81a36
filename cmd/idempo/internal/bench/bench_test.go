package bench

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
)

func TestRunOnGoChannelAndMemory(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	rep, err := Run(context.Background(), Options{Events: 300, Rounds: 2, Warmup: 50, Consumers: 2, InFlight: 4, Memory: true, MemoryKeys: 2000, Stderr: &stderr})
	require.NoError(t, err)
	require.Contains(t, stderr.String(), "broker: gochannel (in-process), store: memory (in-process)")
	require.Equal(t, 2, rep.Consumers)
	require.Equal(t, 4, rep.InFlight)
	for name, v := range map[string]VariantResult{"bare": rep.Variants.Bare, "watermill": rep.Variants.Watermill, "idempo": rep.Variants.Idempo} {
		require.Equal(t, 600, v.Messages, name)
		require.Len(t, v.Rounds, 2, name)
		require.Positive(t, v.EventsPerSec, name)
		require.Positive(t, v.NsPerMsg, name)
		require.Positive(t, v.AllocsPerMsg, name)
		require.Positive(t, v.MaxUS, name)
		require.LessOrEqual(t, v.P50US, v.P99US, name)
		require.LessOrEqual(t, v.P99US, v.MaxUS, name)
	}
	require.Positive(t, rep.RatioVsBare)
	require.Positive(t, rep.RatioVsWatermill)
	require.NotNil(t, rep.Memory)
	require.Equal(t, "memory", rep.Memory.Store)
	require.Equal(t, 2000, rep.Memory.Keys)
	require.Positive(t, rep.Memory.BytesPerKey)
}

// Every store runs the workload and measures its records; server stores
// are the project's docker compose services.
func TestRunOnEveryStore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, kind, state string }{
		{"sqlite", "sqlite", "done"},
		{"redis://127.0.0.1:6379/0", "redis", "done"},
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres", "done"},
		{"mysql://root@127.0.0.1:3306/test", "mysql", "done"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			rep, err := Run(context.Background(), Options{Store: tc.url, Events: 100, Rounds: 1, Warmup: -1, Memory: true, MemoryKeys: 50})
			require.NoError(t, err)
			require.Equal(t, 100, rep.Variants.Idempo.Messages)
			require.Positive(t, rep.RatioVsBare)
			idem := rep.Variants.Idempo
			if tc.kind == "redis" {
				require.GreaterOrEqual(t, idem.CallsPerRoundTrip, 1.0, "the mean pipeline")
				require.Positive(t, rep.FloorEventsPerSec, "go-redis alone with the store's scripts")
				require.Positive(t, rep.RatioVsFloor)
			} else {
				require.GreaterOrEqual(t, idem.ClaimRowsPerStatement, 1.0, "the mean claim statement")
				require.GreaterOrEqual(t, idem.CompleteRowsPerStatement, 1.0, "the mean completion statement")
			}
			require.Zero(t, rep.Variants.Bare.ClaimRowsPerStatement+rep.Variants.Bare.CallsPerRoundTrip, "bare uses no store")
			m := rep.Memory
			require.NotNil(t, m)
			require.Equal(t, tc.kind, m.Store)
			require.Equal(t, tc.state, m.State)
			require.Positive(t, m.BytesPerKey)
			require.NotEmpty(t, m.Method)
			if tc.kind == "redis" {
				require.Equal(t, 50, m.Keys, "MEMORY USAGE of the records written for it")
			} else {
				require.Equal(t, 150, m.Keys, "every row of the run's table: the idempo round's and the memory records")
			}
		})
	}
}

func TestRunMemoryOnly(t *testing.T) {
	t.Parallel()
	rep, err := Run(context.Background(), Options{Rounds: -1, Memory: true, MemoryKeys: 500})
	require.NoError(t, err)
	require.Zero(t, rep.Rounds)
	require.Zero(t, rep.Variants.Idempo.Messages)
	require.Equal(t, 500, rep.Memory.Keys)
}

func TestOptionsAreValidated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Events: -1}, "--events must be > 0"},
		{Options{Rounds: -2}, "--rounds must be > 0"},
		{Options{Rounds: -1}, "without --memory"},
		{Options{Consumers: -1}, "--consumers must be > 0"},
		{Options{InFlight: -1}, "--in-flight must be > 0"},
		{Options{Warmup: -5}, "--warmup must be >= 0"},
		{Options{Broker: "mqtt://x"}, `unknown scheme "mqtt"`},
		{Options{Store: "redis://"}, "no host"},
	} {
		_, err := Run(context.Background(), tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := Run(context.Background(), Options{Store: "postgres://u:secret@%zz/db"})
	require.ErrorIs(t, err, backend.ErrURL)
	require.NotContains(t, err.Error(), "secret")
}

func TestUnreachableStoreIsASetupError(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Options{Events: 10, Store: "redis://127.0.0.1:1/0"})
	require.ErrorContains(t, err, "unreachable")
	require.NotErrorIs(t, err, ErrCheck)
}

// The check catches every way a round can go wrong.
func TestCheckReportsLostDoubleAndNacked(t *testing.T) {
	t.Parallel()
	st := newRoundState("m-", 4)
	h := st.measure(st.handle)
	for _, id := range []string{"m-0", "m-1", "m-1", "m-x"} {
		_, _ = h(message.NewMessage(id, nil))
	}
	err := st.check()
	require.ErrorIs(t, err, ErrCheck)
	for _, want := range []string{
		"2 of 4 messages never handled", "1 messages handled more than once",
		"3 of 4 messages acked", `1 deliveries nacked; first: bench: unexpected message "m-x"`,
	} {
		require.ErrorContains(t, err, want)
	}

	ok := newRoundState("m-", 2)
	h = ok.measure(ok.handle)
	for i := range 2 {
		_, err := h(message.NewMessage(fmt.Sprintf("m-%d", i), nil))
		require.NoError(t, err)
	}
	require.NoError(t, ok.check())
	select {
	case <-ok.done:
	default:
		t.Fatal("done is closed at the last ack")
	}
	require.Positive(t, ok.end.Load()-ok.start)
}

// A broken variant (here: a handler that loses every other message) is an
// error, not a figure.
func TestBrokenWorkloadFailsTheRun(t *testing.T) {
	t.Parallel()
	st := newRoundState("m-", 10)
	drop := func(h message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			if m.UUID[len(m.UUID)-1]%2 == 0 {
				return nil, nil // acked without its effect
			}
			return h(m)
		}
	}
	h := st.measure(chain(st.handle, []message.HandlerMiddleware{drop}))
	for i := range 10 {
		_, _ = h(message.NewMessage(fmt.Sprintf("m-%d", i), nil))
	}
	err := st.check()
	require.ErrorIs(t, err, ErrCheck)
	require.ErrorContains(t, err, "5 of 10 messages never handled")
}

func TestChainRunsTheFirstOutermost(t *testing.T) {
	t.Parallel()
	var order []string
	mw := func(name string) message.HandlerMiddleware {
		return func(h message.HandlerFunc) message.HandlerFunc {
			return func(m *message.Message) ([]*message.Message, error) {
				order = append(order, name)
				return h(m)
			}
		}
	}
	h := chain(func(*message.Message) ([]*message.Message, error) { order = append(order, "handler"); return nil, nil },
		[]message.HandlerMiddleware{mw("poison"), mw("retry"), mw("dedup")})
	_, _ = h(message.NewMessage("x", nil))
	require.Equal(t, []string{"poison", "retry", "dedup", "handler"}, order)
}

func TestKeyRepoRemembersKeys(t *testing.T) {
	t.Parallel()
	r := newKeyRepo(time.Hour)
	dup, err := r.IsDuplicate(context.Background(), "a")
	require.NoError(t, err)
	require.False(t, dup)
	dup, _ = r.IsDuplicate(context.Background(), "a")
	require.True(t, dup)
	dup, _ = r.IsDuplicate(context.Background(), "b")
	require.False(t, dup)
}

func TestMatrixSkipsUnreachableServers(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	res, err := RunMatrix(context.Background(), MatrixOptions{
		Options: Options{Events: 100, Rounds: 1, Warmup: -1, Stderr: &stderr},
		Brokers: []string{"gochannel", "amqp://guest:secret@127.0.0.1:1/"},
		Stores:  []string{"memory", "redis://127.0.0.1:1/0"},
		Command: "idempo bench --matrix",
	})
	require.NoError(t, err)
	require.False(t, res.Failed())
	require.Len(t, res.Rows, 4)
	require.NotNil(t, res.Rows[0].Report, "gochannel × memory ran")
	require.Contains(t, res.Rows[1].Skipped, "unreachable")
	require.Contains(t, res.Rows[2].Skipped, "broker")
	require.Contains(t, res.Rows[3].Skipped, "broker")

	var md bytes.Buffer
	res.Markdown(&md)
	out := md.String()
	require.Contains(t, out, "Command: `idempo bench --matrix`")
	require.Contains(t, out, "| broker | ordering | store | bare ev/s | watermill ev/s | idempo ev/s | ratio_vs_bare | ratio_vs_watermill | ratio_vs_sequential | idempo p50 / p99 | idempo cpu µs/msg |")
	require.Contains(t, out, "| gochannel | — | memory | ")
	require.Contains(t, out, "| gochannel | — | redis://127.0.0.1:1/0 | skipped |")
	require.Contains(t, out, "- gochannel × redis://127.0.0.1:1/0 skipped: store: redis at 127.0.0.1:1 is unreachable")
	require.Contains(t, out, fmt.Sprintf("%d CPUs", res.Machine.NumCPU))
	require.NotContains(t, out+stderr.String(), "secret", "passwords are redacted")
}

func TestMatrixRejectsBadURLs(t *testing.T) {
	t.Parallel()
	_, err := RunMatrix(context.Background(), MatrixOptions{Brokers: []string{"mqtt://x"}})
	require.ErrorIs(t, err, backend.ErrURL)
	_, err = RunMatrix(context.Background(), MatrixOptions{Stores: []string{"memory", "redis://"}})
	require.ErrorIs(t, err, backend.ErrURL)
}

func TestFailedRowMakesTheMatrixFail(t *testing.T) {
	t.Parallel()
	res := &MatrixResult{Rows: []MatrixRow{{Broker: "b", Store: "s", Failed: fmt.Errorf("x: %w", ErrCheck).Error()}}}
	require.True(t, res.Failed())
	var md bytes.Buffer
	res.Markdown(&md)
	require.Contains(t, md.String(), "| b | — | s | FAILED |")
	require.Contains(t, md.String(), "- b × s failed: x: bench: workload check failed")
}

// With Inbox, a SQL store runs the business transaction without dedup and
// idempo's transactional inbox, and nothing else; another store is refused.
func TestRunInbox(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "sqlite"} {
		t.Run(url[:6], func(t *testing.T) {
			t.Parallel()
			rep, err := Run(context.Background(), Options{Store: url, Inbox: true, Events: 100, Rounds: 1, Warmup: -1, InFlight: 8})
			require.NoError(t, err)
			require.NotNil(t, rep.Variants.NoInbox)
			require.Equal(t, 100, rep.Variants.NoInbox.Messages)
			require.Equal(t, 100, rep.Variants.Idempo.Messages)
			require.Zero(t, rep.Variants.Bare.Messages, "no bare variant")
			require.Zero(t, rep.Variants.Watermill.Messages, "no watermill variant")
			require.Nil(t, rep.Variants.Sequential)
			require.Positive(t, rep.RatioVsNoInbox)
			require.GreaterOrEqual(t, rep.Variants.Idempo.ClaimRowsPerStatement, 1.0)
			require.Zero(t, rep.Variants.Idempo.CompleteRowsPerStatement, "completions are in the business transactions")
		})
	}
	_, err := Run(context.Background(), Options{Store: "memory", Inbox: true, Events: 10, Rounds: 1})
	require.ErrorContains(t, err, "--inbox needs a SQL store")
}
