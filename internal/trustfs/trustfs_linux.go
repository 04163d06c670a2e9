// Package trustfs opens the files a root process may act on: its configuration and
// the binaries it executes. Root must never read a file, or run a program, that a
// less privileged user could have written or could swap: so every directory from
// "/" down is opened by descriptor, one component at a time with symlinks refused,
// and each must be root's and writable by root only (or sticky, like /tmp, where no
// one may rename another's entry); the file itself is then opened relative to its
// checked parent and checked on that descriptor. Whatever the caller reads or
// executes afterwards goes through the descriptor, never the path again.
//
// The package is a leaf (golang.org/x/sys only) because banger-helper, the code
// that runs as root, links it.
package trustfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUntrusted marks every refusal of this package: a file or directory someone
// other than root could write, swap or link.
var ErrUntrusted = errors.New("trustfs: not trusted")

// untrusted is an ErrUntrusted with what is wrong and the command that fixes it.
func untrusted(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUntrusted, fmt.Sprintf(format, args...))
}

// OpenDir opens dir (absolute) as an O_PATH descriptor after checking it and every
// ancestor: each a directory, no symlink, owned by root and not writable by group or
// others unless sticky. A missing component is an error wrapping fs.ErrNotExist.
func OpenDir(dir string) (*os.File, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("trustfs: %q is not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	if err := checkDir(fd, "/"); err != nil {
		unix.Close(fd)
		return nil, err
	}
	cur := "/"
	for _, name := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		if name == "" {
			continue
		}
		next := filepath.Join(cur, name)
		nfd, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, &fs.PathError{Op: "open", Path: next, Err: fs.ErrNotExist}
		case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
			return nil, untrusted("%s is a symlink or not a directory: root trusts only real directories on the way; replace it by the directory it points to", next)
		case err != nil:
			return nil, fmt.Errorf("open %s: %w", next, err)
		}
		fd, cur = nfd, next
		if err := checkDir(fd, cur); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// checkDir refuses a directory that someone other than root could change.
func checkDir(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Uid != 0 {
		return untrusted("directory %s belongs to uid %d, who could swap what is in it: run `chown root:root %s` (and `chmod go-w %s`)", path, st.Uid, path, path)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return untrusted("directory %s is writable by group or others (mode %04o), who could swap what is in it: run `chmod go-w %s`", path, st.Mode&0o7777, path)
	}
	return nil
}

// OpenRootFile opens a root-only file for reading, such as ROOT/config.toml: its
// directory chain must pass OpenDir, and the file must be a regular file with one
// link, owned by root and not writable by group or others. It is opened with
// O_NOFOLLOW relative to its checked directory and checked on the descriptor, so the
// content read is the content checked. A missing file is an error wrapping
// fs.ErrNotExist (the caller decides whether that is fine).
func OpenRootFile(path string) (*os.File, error) {
	dir, err := OpenDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), filepath.Base(path), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	case errors.Is(err, unix.ELOOP):
		return nil, untrusted("%s is a symlink: root reads only a real file here; replace it by a root-owned copy (`cp --remove-destination \"$(readlink -f %s)\" %s; chown root:root %s; chmod 644 %s`)", path, path, path, path, path)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := checkRootFile(path, st); err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func checkRootFile(path string, st unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return untrusted("%s is not a regular file: move it away and write a regular file owned by root (mode 644)", path)
	case st.Nlink != 1:
		return untrusted("%s has %d hard links, so another name could change it: replace it by a copy (`cp %s %s.new && mv %s.new %s`)", path, st.Nlink, path, path, path, path)
	case st.Uid != 0:
		return untrusted("%s belongs to uid %d, who could rewrite what root reads: run `chown root:root %s; chmod 644 %s`", path, st.Uid, path, path)
	case st.Mode&0o022 != 0:
		return untrusted("%s is writable by group or others (mode %04o): run `chown root:root %s; chmod 644 %s`", path, st.Mode&0o7777, path, path)
	}
	return nil
}

// ReadRootFile reads a file OpenRootFile accepts, at most limit bytes. A missing file
// is an error wrapping fs.ErrNotExist.
func ReadRootFile(path string, limit int64) ([]byte, error) {
	f, err := OpenRootFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: it cannot be banger's", path, limit)
	}
	return data, nil
}

// Binary is an executable root runs, checked once and pinned by an O_PATH
// descriptor: run it through ExecPath, which names the checked inode whatever
// happens to the path later. Safe for concurrent use; Close ends it.
type Binary struct {
	// Path is absolute with every symlink resolved: the file that was checked.
	Path string
	f    *os.File // O_PATH, never nil before Close
	dev  uint64
	ino  uint64
}

// OpenBinary resolves name (a path, or a command name looked up in $PATH) to an
// absolute path without symlinks and pins it after checking it: a regular,
// executable file owned by root and not writable by group or others, in
// directories that pass OpenDir. Anything else is refused with what to fix.
func OpenBinary(name string) (*Binary, error) {
	p := name
	if !strings.Contains(name, "/") {
		var err error
		if p, err = exec.LookPath(name); err != nil {
			return nil, fmt.Errorf("%q not found: %w", name, err)
		}
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	fd, st, err := openBinary(p)
	if err != nil {
		return nil, err
	}
	return &Binary{Path: p, f: os.NewFile(uintptr(fd), p), dev: st.Dev, ino: st.Ino}, nil
}

func openBinary(p string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	dir, err := OpenDir(filepath.Dir(p))
	if err != nil {
		return -1, st, err
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), filepath.Base(p), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, st, fmt.Errorf("open %s: %w", p, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, fmt.Errorf("stat %s: %w", p, err)
	}
	if err := checkBinary(p, st); err != nil {
		unix.Close(fd)
		return -1, st, err
	}
	return fd, st, nil
}

func checkBinary(p string, st unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return untrusted("%s is not a regular file: install the real binary there", p)
	case st.Uid != 0:
		return untrusted("%s belongs to uid %d, who could make root run anything: run `chown root:root %s; chmod 755 %s`", p, st.Uid, p, p)
	case st.Mode&0o022 != 0:
		return untrusted("%s is writable by group or others (mode %04o): run `chown root:root %s; chmod 755 %s`", p, st.Mode&0o7777, p, p)
	case st.Mode&0o111 == 0:
		return untrusted("%s is not executable: run `chmod 755 %s`", p, p)
	}
	return nil
}

// ExecPath is the path to execute: /proc/self/fd/N of the pinned descriptor, which
// the kernel resolves to the checked inode in the process that calls execve (the
// descriptor is close-on-exec, and execve opens the file before closing those).
func (b *Binary) ExecPath() string { return "/proc/self/fd/" + strconv.Itoa(int(b.f.Fd())) }

// Verify re-checks the pinned file (owner and mode may have changed since) and that
// Path still names it through trusted directories: a program given Path by name
// (the jailer copies --exec-file by path) then gets the checked file.
func (b *Binary) Verify() error {
	var st unix.Stat_t
	if err := unix.Fstat(int(b.f.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", b.Path, err)
	}
	if err := checkBinary(b.Path, st); err != nil {
		return err
	}
	fd, now, err := openBinary(b.Path)
	if err != nil {
		return err
	}
	unix.Close(fd)
	if now.Dev != b.dev || now.Ino != b.ino {
		return untrusted("%s was replaced since banger-helper started: restart banger-helper to check the new one", b.Path)
	}
	return nil
}

// Close releases the descriptor.
func (b *Binary) Close() error { return b.f.Close() }
