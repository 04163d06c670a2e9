package system

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/layout"
	"banger/internal/trustfs"
)

// The `banger system ...` commands run as root inside a root the owner shares (see
// the ownership model in package layout). rootFS is how they touch it: ROOT and
// ROOT/system are opened once, checked to be root's, and every file below is
// reached relative to those descriptors, with every symlink refused.

// beneath resolves below a directory descriptor: no symlink, no /proc magic link,
// no escape.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// maxRecord bounds a pid record; a real one is about a hundred bytes.
const maxRecord = 4096

type rootFS struct {
	l    layout.Layout
	root *os.File // O_PATH ROOT, checked by trustfs.OpenDir; never nil
	sys  *os.File // O_PATH ROOT/system, root's and 0755; nil when it does not exist
}

// openRootFS opens ROOT and, if it exists, ROOT/system.
func openRootFS(l layout.Layout) (*rootFS, error) {
	root, err := trustfs.OpenDir(l.Root)
	if err != nil {
		return nil, fmt.Errorf("banger root %s: %w", l.Root, err)
	}
	r := &rootFS{l: l, root: root}
	sys, err := l.OpenSystemDir()
	switch {
	case err == nil:
		r.sys = sys
	case errors.Is(err, unix.ENOENT):
	default:
		root.Close()
		return nil, err
	}
	return r, nil
}

func (r *rootFS) Close() {
	r.root.Close()
	if r.sys != nil {
		r.sys.Close()
	}
}

// rel is p relative to ROOT.
func (r *rootFS) rel(p string) (string, error) {
	rel, err := filepath.Rel(r.l.Root, p)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%s is not under the banger root %s", p, r.l.Root)
	}
	return rel, nil
}

// openRootLog opens a log root writes under ROOT/system (the helper's) for
// appending, creating it root's and 0640. ROOT/system is root's, so only root
// could have put anything there; what is found must still be a root-owned regular
// file with one link.
func (r *rootFS) openRootLog(path string) (*os.File, error) {
	if r.sys == nil {
		return nil, fmt.Errorf("open %s: %s does not exist", path, r.l.SystemDir())
	}
	fd, err := unix.Openat2(int(r.sys.Fd()), filepath.Base(path), &unix.OpenHow{
		Flags: unix.O_RDWR | unix.O_APPEND | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Mode:  0o640, Resolve: beneath,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Uid != 0 {
		f.Close()
		return nil, fmt.Errorf("%s must be a root-owned regular file with one link: remove it and start again", path)
	}
	return f, nil
}

// openOwnerLog opens a log in a directory the owner writes (logs/bangerd.log) for
// the owner's process to append to, without ever letting the owner choose what
// root opens: it is created with O_EXCL beneath ROOT with every symlink refused,
// then handed to the owner by fchown on that descriptor. One that exists is used
// only if it already is the owner's regular file with one link (so not a hard
// link to a file of root's), opened O_NONBLOCK so that a FIFO cannot hang root;
// root never chowns or truncates a file it did not create.
func (r *rootFS) openOwnerLog(path string, o Owner) (*os.File, error) {
	rel, err := r.rel(path)
	if err != nil {
		return nil, err
	}
	how := func(flags uint64) *unix.OpenHow {
		h := &unix.OpenHow{Flags: flags | unix.O_RDWR | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC, Resolve: beneath}
		if flags&unix.O_CREAT != 0 {
			h.Mode = 0o640 // openat2 refuses a mode without O_CREAT
		}
		return h
	}
	created := true
	fd, err := unix.Openat2(int(r.root.Fd()), rel, how(unix.O_CREAT|unix.O_EXCL))
	if errors.Is(err, unix.EEXIST) {
		created = false
		fd, err = unix.Openat2(int(r.root.Fd()), rel, how(0))
	}
	switch {
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("%s (or a directory on its way) is a symlink: root does not follow links under the banger root; remove it and start again", path)
	case errors.Is(err, unix.ENXIO):
		return nil, fmt.Errorf("%s is a FIFO or socket, not a log file: remove it and start again", path)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if created {
		if err := unix.Fchown(fd, o.UID, o.GID); err != nil {
			f.Close()
			return nil, fmt.Errorf("chown %s to the owner: %w", path, err)
		}
		return f, nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s is a %s, not a regular file: root does not write to it; remove it and start again", path, kind(st.Mode))
	}
	if st.Nlink != 1 || int(st.Uid) != o.UID {
		f.Close()
		return nil, fmt.Errorf("%s must be a regular file of the owner (uid %d) with one link, but is mode %#o, uid %d, %d link(s): root neither writes to nor takes over such a file; remove it and start again",
			path, o.UID, st.Mode, st.Uid, st.Nlink)
	}
	return f, nil
}

// procRecord is what `banger system run -d` records of a process it started, in
// ROOT/system (root's), and what `banger system stop` checks a process against
// before signalling it: the PID alone could have been reused.
type procRecord struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // field 22 of /proc/PID/stat, clock ticks after boot
	Exe   string `json:"exe"`   // informational: /proc/PID/exe at launch
	Dev   uint64 `json:"dev"`   // device and inode of the executable at launch
	Ino   uint64 `json:"ino"`
}

// writeRecord replaces ROOT/system/<name> atomically.
func (r *rootFS) writeRecord(path string, rec procRecord) error {
	if r.sys == nil {
		return fmt.Errorf("write %s: %s does not exist", path, r.l.SystemDir())
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	dir := int(r.sys.Fd())
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := "." + filepath.Base(path) + "." + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat2(dir, tmp, &unix.OpenHow{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC, Mode: 0o644, Resolve: beneath})
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dir, tmp, dir, filepath.Base(path))
	}
	if err != nil {
		_ = unix.Unlinkat(dir, tmp, 0)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readRecord reads ROOT/system/<name>; a missing record wraps fs.ErrNotExist.
func (r *rootFS) readRecord(path string) (procRecord, error) {
	if r.sys == nil {
		return procRecord{}, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	fd, err := unix.Openat2(int(r.sys.Fd()), filepath.Base(path), &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC, Resolve: beneath})
	if errors.Is(err, unix.ENOENT) {
		return procRecord{}, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	if err != nil {
		return procRecord{}, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return procRecord{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 {
		return procRecord{}, fmt.Errorf("%s is not a root-owned regular file: remove it", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRecord))
	if err != nil {
		return procRecord{}, fmt.Errorf("read %s: %w", path, err)
	}
	var rec procRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID <= 0 || rec.Start == 0 {
		return procRecord{}, fmt.Errorf("%s is not a process record banger wrote (%q): remove it", path, data)
	}
	return rec, nil
}

// removeRecord removes ROOT/system/<name> if it is there.
func (r *rootFS) removeRecord(path string) {
	if r.sys != nil {
		_ = unix.Unlinkat(int(r.sys.Fd()), filepath.Base(path), 0)
	}
}

// removeSocket removes a socket left behind under ROOT (by a process that was
// killed), reached beneath ROOT with symlinks refused, and only if it is a socket:
// the owner cannot make root unlink anything else, or anything outside its root.
func (r *rootFS) removeSocket(path string) {
	rel, err := r.rel(path)
	if err != nil {
		return
	}
	dir, err := unix.Openat2(int(r.root.Fd()), filepath.Dir(rel), &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
	if err != nil {
		return
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if unix.Fstatat(dir, filepath.Base(rel), &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		_ = unix.Unlinkat(dir, filepath.Base(rel), 0)
	}
}

// kind names a file type for an error message.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device node"
	case unix.S_IFLNK:
		return "symlink"
	}
	return "special file"
}
