package backend

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/idempo/idempo/broker/kafka/embedded"
)

// embeddedChildEnv makes an idempo process run an embedded Kafka cluster
// and nothing else; its value is the partitions per topic.
const embeddedChildEnv = "IDEMPO_EMBEDDED_KAFKA_CHILD"

// ServeEmbeddedChild runs the embedded Kafka cluster when this process was
// started for it by [InChildProcess]: it prints the cluster's URL on a line
// of its own, serves until its standard input closes (the parent closed it,
// or died), closes the cluster and returns true; if the cluster cannot
// start it says why on standard error and exits with status 1. In any
// other process it returns false at once. The idempo binary calls it first
// thing.
func ServeEmbeddedChild() bool {
	v, ok := os.LookupEnv(embeddedChildEnv)
	if !ok {
		return false
	}
	partitions, _ := strconv.Atoi(v)
	emb, err := embedded.Start(embedded.Config{Partitions: max(partitions, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "idempo: embedded kafka:", err)
		os.Exit(1)
	}
	fmt.Println(emb.URL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	emb.Close()
	return true
}

// InChildProcess runs an embedded Kafka cluster in a process of its own (the
// same binary, see [ServeEmbeddedChild]), so that a benchmark's broker is
// reached over a socket and its CPU and garbage are not the client's.
// Ignored by other brokers.
func InChildProcess() Option { return func(o *options) { o.child = true } }

// startEmbeddedChild starts the cluster process and returns its URL and a
// function that stops it (closing its standard input, then killing it if
// it has not exited within 10 s).
func startEmbeddedChild(partitions int) (string, func() error, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("embedded kafka process: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), embeddedChildEnv+"="+strconv.Itoa(max(partitions, 1)))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("embedded kafka process: %w", err)
	}
	exited := make(chan error, 1)
	stop := func() error {
		_ = stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("embedded kafka process: %w", err)
			}
			return nil
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("embedded kafka process did not stop within 10s; killed (%w)", <-exited)
		}
	}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	select {
	case url := <-lines:
		if !strings.HasPrefix(url, "kafka://") {
			_ = stop()
			return "", nil, fmt.Errorf("embedded kafka process did not start (printed %q)", url)
		}
		return url, stop, nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return "", nil, errors.New("embedded kafka process printed no address within 30s")
	}
}
