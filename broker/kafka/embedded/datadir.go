package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LockFileName is the lock file [Start] keeps in an [Config.DataDir]
// directory while a cluster runs on it. [Cluster.Close] removes it.
const LockFileName = "idempo-embedded.lock"

// ErrDataDirInUse is matched (with [errors.Is]) by the error [Start]
// returns when another running cluster, in this process or another one,
// holds the [Config.DataDir] directory. The message names the directory.
var ErrDataDirInUse = errors.New("embedded: cluster data directory is in use")

// ErrDataDirUnclean is matched (with [errors.Is]) by the error
// [Start] returns when the [Config.DataDir] directory still holds the
// lock file of a cluster that stopped without [Cluster.Close] (a crash, a
// kill -9). The embedded cluster writes its files through the page cache and
// does not repair them on load: after such a stop it comes back with part of
// its records, and records produced afterwards cannot be read. The message
// names the directory; delete it (or move it away) to start afresh.
var ErrDataDirUnclean = errors.New("embedded: cluster data directory was not closed cleanly")

// dirLock is the lock on a data directory: the lock file, open and locked.
type dirLock struct {
	path string
	f    *os.File
}

// lockDataDir creates dir if needed and takes its lock file. It fails with
// [ErrDataDirInUse] if a live holder has it and with [ErrDataDirUnclean] if
// the file was left behind by a holder that never released it.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded: cluster data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFileName)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("embedded: cluster data directory %s: lock file: %w", dir, err)
		}
		held, err := tryLockFile(f)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("embedded: cluster data directory %s: lock file: %w", dir, err)
		}
		if !held {
			owner := readOwner(f)
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s is held by a running cluster (%s); stop it with Close first, or give this cluster another directory",
				ErrDataDirInUse, dir, owner)
		}
		// A holder that closed cleanly removes the file before it lets the
		// lock go: if the path no longer names the file locked here, open
		// the new one.
		if same, err := samePath(f, path); err != nil || !same {
			_ = f.Close()
			if err != nil {
				return nil, fmt.Errorf("embedded: cluster data directory %s: lock file: %w", dir, err)
			}
			continue
		}
		if owner := readOwner(f); owner != "" {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s holds the lock file %s of a cluster (%s) that stopped without Close; "+
				"its records cannot be trusted: delete the directory (or move it away) and start again",
				ErrDataDirUnclean, dir, LockFileName, owner)
		}
		// Empty: a new file (or one whose creator died before writing,
		// which was before its cluster started). Write the owner.
		owner := fmt.Sprintf("pid %d, started %s", os.Getpid(), time.Now().UTC().Format(time.RFC3339))
		if _, err = f.WriteAt([]byte(owner+"\n"), 0); err == nil {
			err = f.Sync()
		}
		if err != nil {
			_ = f.Close()
			_ = os.Remove(path)
			return nil, fmt.Errorf("embedded: cluster data directory %s: lock file: %w", dir, err)
		}
		return &dirLock{path: path, f: f}, nil
	}
}

// readOwner returns the lock file's content, the holder's description, or
// "" for an empty file.
func readOwner(f *os.File) string {
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, 0)
	return strings.TrimSpace(string(buf[:n]))
}

func samePath(f *os.File, path string) (bool, error) {
	open, err := f.Stat()
	if err != nil {
		return false, err
	}
	named, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(open, named), nil
}

// release removes the lock file, then lets the lock go: the directory was
// closed cleanly. A nil lock (no data directory) releases nothing.
func (l *dirLock) release() error {
	if l == nil {
		return nil
	}
	err := os.Remove(l.path)
	return errors.Join(err, l.f.Close())
}
