package console

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/dlqops"
)

// runConsole runs b.h.Run until the test ends.
func runConsole(t *testing.T, b *bundle) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.h.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of its context's end")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.h.jobs.mu.Lock()
		running := b.h.jobs.ctx != nil
		b.h.jobs.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not start within 30s")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitJob polls the job's page until it shows want (a job Run resumes is
// unknown until Run has read it).
func waitJob(t *testing.T, b *bundle, id, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := b.get(t, "/jobs/"+id)
		if r.status == http.StatusOK && strings.Contains(r.body, want) {
			return r.body
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s never showed %q:\n%s", id, want, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With Run running, a confirmed group replay is a background job with a
// page of its own.
func TestJob(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	runConsole(t, b)
	gs, err := b.h.idx.groups(context.Background(), testDLQ, nil)
	require.NoError(t, err)
	_, pending := b.dryRun(t, url.Values{"action": {"replay"}, "group": {gs[0].ID}})
	r := b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	require.Equal(t, "../../jobs/"+pending, r.header.Get("Location"))
	body := waitJob(t, b, pending, "Done: 3 replayed")
	require.Contains(t, body, "by <strong>alice</strong>")
	require.NotContains(t, body, `http-equiv="refresh"`, "a finished job's page stays")
	require.Equal(t, 3, b.pub.count("orders"))
	over := b.get(t, "/").body
	require.Contains(t, over, "Replays and purges")
	require.Contains(t, over, "done, 3 of 3")
	require.Equal(t, http.StatusNotFound, b.get(t, "/jobs/nope").status)
}

// A job a stopped console left running in the index is resumed by the next
// Run on that index, on exactly its snapshot.
func TestJobResumes(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"memory", "sqlite", "postgres", "mysql", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			idx := indexes()[kind](t)
			b := setup(t, func(c *Config) { c.Index = idx })
			b.refresh(t)
			ops, err := dlqops.New(dlqops.Config{Source: b.src, Resolutions: b.res, Publisher: b.pub, Operator: "alice"})
			require.NoError(t, err)
			f := dlqops.Filter{IDs: []string{"p1", "p2", "s1"}}
			dry, err := ops.Purge(context.Background(), testDLQ, f, dlqops.PurgeOptions{DryRun: true})
			require.NoError(t, err)
			// p1 was purged before the console stopped; p4 came since.
			_, err = ops.Purge(context.Background(), testDLQ, dlqops.Filter{IDs: []string{"p1"}}, dlqops.PurgeOptions{})
			require.NoError(t, err)
			j := job{
				ID: "j1", DLQ: testDLQ, Kind: "purge", Operator: "alice", What: "the selected entries", Filter: f,
				Snapshot: dry.Snapshot, Total: 3, State: jobRunning, Done: 1, Started: t0,
			}
			state, err := json.Marshal(j)
			require.NoError(t, err)
			require.NoError(t, idx.saveJob(context.Background(), "j1", state))

			runConsole(t, b)
			body := waitJob(t, b, "j1", "Done: 0 replayed, 0 parked, 2 purged, 1 skipped")
			require.Contains(t, body, "resumed after a restart")
			recs, err := b.res.Resolutions(context.Background(), testDLQ)
			require.NoError(t, err)
			require.Len(t, recs, 3)
			// The page can show the outcome a moment before the job's final
			// state is saved: wait for the index, with a deadline.
			var last string
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				raw, err := idx.jobs(context.Background())
				require.NoError(t, err)
				require.Len(t, raw, 1)
				if last = string(raw[0]); strings.Contains(last, `"State":"done"`) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			require.Contains(t, last, `"State":"done"`, "the resumed job's final state was not saved within 30s")
		})
	}
}

// A console sharing its index with another resumes only the jobs of the
// DLQs it shows: a running job of another console's DLQ is left to it (it
// would read that DLQ through the wrong source), and stays as it was.
func TestJobOfAnotherDLQIsNotResumed(t *testing.T) {
	t.Parallel()
	idx := indexes()["memory"](t)
	b := setup(t, func(c *Config) { c.Index = idx })
	b.refresh(t)
	j := job{
		ID: "elsewhere", DLQ: "payments.dlq", Kind: "purge", Operator: "bob", What: "the selected entries",
		Filter: dlqops.Filter{IDs: []string{"x"}}, Snapshot: "s", Total: 1, State: jobRunning, Started: t0,
	}
	state, err := json.Marshal(j)
	require.NoError(t, err)
	require.NoError(t, idx.saveJob(context.Background(), j.ID, state))
	// A job of this console's DLQ, resumed: once it is done, resumeJobs has
	// looked at every job.
	ops, err := dlqops.New(dlqops.Config{Source: b.src, Resolutions: b.res, Publisher: b.pub, Operator: "alice"})
	require.NoError(t, err)
	f := dlqops.Filter{IDs: []string{"p1"}}
	dry, err := ops.Purge(context.Background(), testDLQ, f, dlqops.PurgeOptions{DryRun: true})
	require.NoError(t, err)
	mine, err := json.Marshal(job{
		ID: "mine", DLQ: testDLQ, Kind: "purge", Operator: "alice", What: "the selected entries", Filter: f,
		Snapshot: dry.Snapshot, Total: 1, State: jobRunning, Started: t0,
	})
	require.NoError(t, err)
	require.NoError(t, idx.saveJob(context.Background(), "mine", mine))

	runConsole(t, b)
	waitJob(t, b, "mine", "Done: 0 replayed, 0 parked, 1 purged")
	require.Equal(t, http.StatusNotFound, b.get(t, "/jobs/elsewhere").status, "another DLQ's job is not this console's")
	raw, err := idx.jobs(context.Background())
	require.NoError(t, err)
	for _, r := range raw {
		var got job
		require.NoError(t, json.Unmarshal(r, &got))
		if got.ID == "elsewhere" {
			require.Equal(t, jobRunning, got.State, "the other console's job is left as it was")
			require.Zero(t, got.Resumed)
		}
	}
}
