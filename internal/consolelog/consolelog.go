// Package consolelog keeps a VM's serial console in a log of bounded size.
//
// A guest is trusted by nothing on the host, and it can write to its console
// without end; the log must not fill the host's disk. So the console is never a
// plain file the VMM appends to. The VMM writes into a pipe, and a small logger
// process reads the pipe and keeps the newest bytes: the log is two files, PATH
// (the newest) and PATH.1 (the ones before), each at most half the cap, so
// together at most the cap; when PATH is full it becomes PATH.1 and a fresh PATH
// is started. Nothing is rewritten, so a guest writing 100 MB costs 100 MB of
// writes, not more.
//
// Why a process of its own: VMMs are detached and outlive bangerd (a restart, an
// upgrade), and the cap must hold while bangerd is down. Had bangerd read the
// console itself, QEMU would have to drop the output (or, with a file, write it
// uncapped) while nobody reads; a ring buffer inside QEMU read over QMP loses
// what was not yet read when QEMU exits, which is exactly the kernel panic a
// failed start must show. The logger is started beside the VMM, detached like it,
// and ends when the VMM does (the pipe's last writer closes). It is bangerd's own
// executable run again (/proc/self/exe) with an environment variable that this
// package's init recognises, so there is no other binary to install or find.
//
// While the logger holds a file it holds an exclusive flock on it; Settle waits
// for that lock to go, to read a log the VMM has finished writing.
package consolelog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMax is the cap when none is given (config console.max_size).
const DefaultMax = 1 << 20

// MinMax is the smallest cap accepted: two halves of 2 KiB.
const MinMax = 4 << 10

// PrevSuffix names the older half of a log: PATH.1.
const PrevSuffix = ".1"

// Log is the writing side of a capped log: PATH receives writes until it holds
// half the cap, then becomes PATH.1 (replacing the older one) and a new PATH is
// started. Not safe for concurrent use.
type Log struct {
	path string
	half int64    // immutable; > 0
	f    *os.File // the current PATH, flocked exclusively; nil after a failure
	size int64    // bytes in f
}

// Create starts a fresh log at path with the given cap (0: DefaultMax): it
// removes PATH.1 and truncates or creates PATH (never through a symlink), and
// locks it.
func Create(path string, max int64) (*Log, error) {
	if max == 0 {
		max = DefaultMax
	}
	if max < MinMax {
		return nil, fmt.Errorf("console log %s: cap %d bytes is below the minimum %d", path, max, MinMax)
	}
	if err := os.Remove(path + PrevSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("console log: %w", err)
	}
	f, err := openLocked(path)
	if err != nil {
		return nil, err
	}
	return &Log{path: path, half: max / 2, f: f}, nil
}

// openLocked creates or truncates path, refusing a symlink, and flocks it.
func openLocked(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("console log %s: lock: %w (is another logger writing it?)", path, err)
	}
	return f, nil
}

// Write appends p, rotating as needed. It reports len(p) unless the file could
// not be written; after such a failure later writes are dropped (and report the
// failure), so a full disk never blocks the guest's console.
func (l *Log) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if l.f == nil {
			return total - len(p), errors.New("console log: not writable after an earlier failure")
		}
		if l.size >= l.half {
			if err := l.rotate(); err != nil {
				return total - len(p), err
			}
		}
		n := min(int64(len(p)), l.half-l.size)
		w, err := l.f.Write(p[:n])
		l.size += int64(w)
		p = p[w:]
		if err != nil {
			l.fail()
			return total - len(p), fmt.Errorf("console log: %w", err)
		}
	}
	return total, nil
}

// rotate makes PATH the older half and starts a new PATH. The new file is locked
// before it gets its name, so Settle never mistakes it for a finished log, and it
// takes PATH's name in one step (RENAME_EXCHANGE): were PATH moved away first,
// Settle could find no PATH in between and take the log for finished.
func (l *Log) rotate() error {
	next := l.path + ".new"
	nf, err := openLocked(next)
	if err != nil {
		l.fail()
		return err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, next, unix.AT_FDCWD, l.path, unix.RENAME_EXCHANGE); err != nil {
		nf.Close()
		os.Remove(next)
		l.fail()
		return fmt.Errorf("console log: rotate: %w", err)
	}
	if err := os.Rename(next, l.path+PrevSuffix); err != nil { // next now holds the old half
		nf.Close()
		l.fail()
		return fmt.Errorf("console log: %w", err)
	}
	l.f.Close()
	l.f, l.size = nf, 0
	return nil
}

func (l *Log) fail() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// Close closes the current file, which releases its lock.
func (l *Log) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Remove deletes both halves of the log at path; missing ones are not an error.
func Remove(path string) error {
	var errs []error
	for _, p := range []string{path, path + PrevSuffix, path + ".new"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Size is the bytes the log at path holds, both halves together.
func Size(path string) int64 {
	var n int64
	for _, p := range []string{path + PrevSuffix, path} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// Open returns the whole log, older half first. A missing log reads empty.
func Open(path string) (io.ReadCloser, error) {
	var files []*os.File
	for _, p := range []string{path + PrevSuffix, path} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("console log: %w", err)
		}
		files = append(files, f)
	}
	readers := make([]io.Reader, len(files))
	for i, f := range files {
		readers[i] = f
	}
	return &multiFile{Reader: io.MultiReader(readers...), files: files}, nil
}

type multiFile struct {
	io.Reader
	files []*os.File
}

func (m *multiFile) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Tail returns up to n of the newest bytes of the log at path.
func Tail(path string, n int64) ([]byte, error) {
	cur, err := readTail(path, n)
	if err != nil {
		return nil, err
	}
	if int64(len(cur)) >= n {
		return cur, nil
	}
	prev, err := readTail(path+PrevSuffix, n-int64(len(cur)))
	if err != nil {
		return nil, err
	}
	return append(prev, cur...), nil
}

func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(fi.Size()-n, io.SeekStart); err != nil {
			return nil, fmt.Errorf("console log: %w", err)
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, n))
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	return b, nil
}

// Settle waits up to timeout for the logger of path to finish (the VMM exited and
// the logger wrote what was left in the pipe), so that a read after it sees the
// console's last lines. It returns at once when no logger holds the log.
func Settle(path string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		f.Close()
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// maxFromEnv parses the cap passed to the logger process.
func maxFromEnv(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < MinMax {
		return 0, fmt.Errorf("console log cap %q: want a byte count of at least %d", s, MinMax)
	}
	return n, nil
}

// Follow writes the whole log to w, then what is appended, until ctx ends: it
// polls every interval and calls flush after each batch. When the logger
// rotates, it finishes the old file (now PATH.1) and goes on with the new PATH
// from its start, so nothing is repeated; a guest writing more than half the
// cap between two polls loses the middle to the follower, not to the log.
func Follow(ctx context.Context, w io.Writer, path string, interval time.Duration, flush func()) error {
	prev, err := os.Open(path + PrevSuffix)
	if err == nil {
		_, err = io.Copy(w, prev)
		prev.Close()
		if err != nil {
			return err
		}
	}
	var cur *os.File
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	for {
		if cur == nil {
			if f, err := os.Open(path); err == nil {
				cur = f
			}
		}
		if cur != nil {
			if _, err := io.Copy(w, cur); err != nil {
				return err
			}
			if rotated(cur, path) {
				// Whatever the logger wrote before renaming it.
				if _, err := io.Copy(w, cur); err != nil {
					return err
				}
				cur.Close()
				cur = nil
				continue
			}
		}
		if flush != nil {
			flush()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// rotated reports whether path no longer names f.
func rotated(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return true
	}
	b, err := os.Stat(path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return !os.SameFile(a, b)
}
