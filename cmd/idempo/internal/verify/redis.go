package verify

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// ownRedis is a private redis-server with an fsync-always append-only file.
type ownRedis struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startOwnRedis() (*ownRedis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("--own-redis needs redis-server on PATH (apt-get install redis-server): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "idempo-verify-redis-")
	if err != nil {
		return nil, err
	}
	r := &ownRedis{port: port, dir: dir}
	if err := r.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

func (r *ownRedis) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

func (r *ownRedis) start() error {
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", r.dir,
		"--maxmemory-policy", "noeviction")
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(r.port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on port %d did not start", r.port)
}

// restart kills the server (no chance to flush anything more) and starts
// it again on the same data: with appendfsync always nothing acknowledged is lost.
func (r *ownRedis) restart() error {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	return r.start()
}

func (r *ownRedis) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
	_ = os.RemoveAll(r.dir)
}
