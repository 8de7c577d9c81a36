package kafka_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
	"github.com/idempo/idempo/broker/kafka/embedded"
)

// childDirEnv names the data directory of the cluster a re-executed test
// binary runs until it is killed.
const childDirEnv = "IDEMPO_KAFKA_TEST_DATADIR_CHILD"

func getenvChildDir() string { return os.Getenv(childDirEnv) }

// runDataDirChild runs a cluster on dir, publishes a few records to it,
// says "ready" on stdout and waits to be killed.
func runDataDirChild(dir string) {
	e, err := embedded.Start(embedded.Config{DataDir: dir})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	pub, err := kafka.NewPublisher(e.Config(""), nil)
	if err == nil {
		for i := range 20 {
			if err = pub.Publish("crash", message.NewMessage(fmt.Sprint(i), []byte("x"))); err != nil {
				break
			}
		}
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}

// startDataDirChild re-executes the test binary as a process running a
// cluster on dir and returns once that cluster has started and written.
func startDataDirChild(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Scan()
		line <- s.Text()
		for s.Scan() { // drain until the process exits
		}
	}()
	select {
	case l := <-line:
		require.Equal(t, "ready", l, "the child process did not start its cluster")
	case <-time.After(2 * time.Minute):
		require.FailNow(t, "the child process did not start its cluster within 2 minutes")
	}
	return cmd
}

// A cluster killed with SIGKILL leaves its data directory locked: a second
// start fails while it lives and still fails after its death, naming the
// directory, because the files it left cannot be loaded safely.
func TestDataDirKilledHolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	child := startDataDirChild(t, dir)

	_, err := embedded.Start(embedded.Config{DataDir: dir})
	require.ErrorIs(t, err, embedded.ErrDataDirInUse, "a live holder")
	require.NotErrorIs(t, err, embedded.ErrDataDirUnclean)
	require.ErrorContains(t, err, dir)
	require.ErrorContains(t, err, fmt.Sprintf("pid %d", child.Process.Pid))

	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait() // "signal: killed"

	for range 2 { // refusing does not clear the lock
		_, err = embedded.Start(embedded.Config{DataDir: dir})
		require.ErrorIs(t, err, embedded.ErrDataDirUnclean, "after kill -9")
		require.NotErrorIs(t, err, embedded.ErrDataDirInUse)
		require.ErrorContains(t, err, dir)
		require.ErrorContains(t, err, "delete the directory")
	}
	require.FileExists(t, filepath.Join(dir, embedded.LockFileName))
}

// A clean Close removes the lock file, and a cluster started on the same
// directory reads what the first one kept; while a cluster runs, a second one
// in the same process cannot take its directory.
func TestDataDirCleanClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	topic := uniqueName("datadir")

	e, err := embedded.Start(embedded.Config{DataDir: dir})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	require.FileExists(t, filepath.Join(dir, embedded.LockFileName))
	_, err = embedded.Start(embedded.Config{DataDir: dir})
	require.ErrorIs(t, err, embedded.ErrDataDirInUse, "a second cluster in the same process")
	require.ErrorContains(t, err, dir)

	pub, err := kafka.NewPublisher(e.Config(""), nil)
	require.NoError(t, err)
	sent := message.NewMessage("kept", []byte("x"))
	require.NoError(t, pub.Publish(topic, sent))
	require.NoError(t, pub.Close())
	e.Close()
	require.NoFileExists(t, filepath.Join(dir, embedded.LockFileName))

	e2 := startEmbedded(t, embedded.Config{DataDir: dir})
	got := receive(t, subscribe(t, newSubscriber(t, e2.Config(uniqueName("g"))), topic), 1, time.Minute)
	require.Equal(t, sent.UUID, got[0].UUID)
	e2.Close()
	require.NoFileExists(t, filepath.Join(dir, embedded.LockFileName))
}

// A directory that cannot be created is reported with its path.
func TestDataDirNotADirectory(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err := embedded.Start(embedded.Config{DataDir: file})
	require.Error(t, err)
	require.ErrorContains(t, err, file)
}
