package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lockedBuffer collects a process's output from its reading goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestInterruptIsNotAVerdict starts demo, verify and bench as processes (this
// test binary acting as the CLI), sends SIGINT once each is at work, and
// expects exit status 130 and a report that says "interrupted" and claims
// neither loss nor failure.
func TestInterruptIsNotAVerdict(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"demo", []string{"demo", "--events", "500000", "--store", "memory"}},
		{"verify", []string{"verify", "--events", "20000", "--kills", "0", "--broker", "kafka", "--store", "sqlite://" + filepath.Join(t.TempDir(), "v.db")}},
		{"bench", []string{"bench", "--events", "2000000", "--rounds", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(os.Environ(), "IDEMPO_TEST_CLI=1")
			var stdout, stderr lockedBuffer
			cmd.Stdout = &stdout
			pipe, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			started := make(chan struct{})
			copied := make(chan struct{})
			go func() {
				defer close(copied)
				sc := bufio.NewScanner(pipe)
				once := sync.Once{}
				for sc.Scan() {
					_, _ = stderr.Write(append(sc.Bytes(), '\n'))
					// The start line: broker and store are open, the run begins.
					if strings.HasPrefix(sc.Text(), "idempo "+tc.name+": broker: ") {
						once.Do(func() { close(started) })
					}
				}
			}()
			exited := make(chan error, 1)
			select {
			case <-started:
			case <-time.After(3 * time.Minute):
				_ = cmd.Process.Kill()
				t.Fatalf("%s printed no start line within 3 minutes; stderr:\n%s", tc.name, stderr.String())
			}
			// Let it work a moment: publishing, consuming, measuring.
			time.Sleep(2 * time.Second)
			require.NoError(t, cmd.Process.Signal(os.Interrupt))
			go func() {
				<-copied
				exited <- cmd.Wait()
			}()
			select {
			case <-exited:
			case <-time.After(3 * time.Minute):
				_ = cmd.Process.Kill()
				t.Fatalf("%s did not stop within 3 minutes of SIGINT; stderr:\n%s", tc.name, stderr.String())
			}
			out, errOut := stdout.String(), stderr.String()
			require.Equal(t, 130, cmd.ProcessState.ExitCode(), "stdout:\n%s\nstderr:\n%s", out, errOut)
			require.Contains(t, errOut, "idempo "+tc.name+": interrupted")
			for _, claim := range []string{"lost", "FAILED", "OK:"} {
				require.NotContains(t, out+errOut, claim, "an interrupted run claims nothing")
			}
		})
	}
}

// An interrupted dlq command exits with status 130 and says so, as demo,
// verify and bench do (its help promises it).
func TestDLQInterruptedExits130(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Ctrl-C before the command got anywhere
	store := "sqlite://" + filepath.Join(t.TempDir(), "r.db")
	for _, sub := range []string{"list", "replay"} {
		var stdout, stderr bytes.Buffer
		args := []string{"dlq", sub, "--broker", dlqTestAMQP, "--store", store, "--topic", "idempo-interrupt-test.dlq", "--all-unresolved"}
		if sub == "list" {
			args = args[:len(args)-1]
		}
		code := run(ctx, args, &stdout, &stderr)
		require.Equal(t, exitInterrupted, code, "%v: %s", args, stderr.String())
		require.Contains(t, stderr.String(), "idempo dlq "+sub+": interrupted: ")
	}
}
