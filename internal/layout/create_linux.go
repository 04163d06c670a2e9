package layout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/trustfs"
)

// beneath resolves a path below a directory descriptor refusing every symlink
// (and /proc magic link) on the way and any escape from the directory.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// ownerTree is the owner's part of the layout, as a tree so that Create walks it
// by descriptor, parents first.
var ownerTree = []dirNode{
	{"run", []dirNode{{"vms", nil}}},
	{"state", []dirNode{{"images", nil}, {"kernels", nil}, {"disks", nil}}},
	{"logs", nil},
}

type dirNode struct {
	name     string
	children []dirNode
}

// Create makes the layout's directories.
//
// With uid >= 0 it prepares the root for an owner, as root does under `banger system
// run|install`: ROOT must be the caller's (root's) and writable by no one else (see
// trustfs.OpenDir); ROOT/system is made root's; run/, state/, logs/ and their
// subdirectories are made and handed to uid:gid. That part works by descriptor: a
// symlink, a non-directory or a directory of another user planted where a
// directory is expected is refused, never followed or chowned. A directory that is
// already the owner's is left as it is; one that is root's is handed over only if
// root made it now or it sits in a directory that was root's (nobody else could
// have put it there).
//
// With uid < 0 it only makes the owner's directories that are missing, as the
// caller, by path: that is bangerd, running as the owner, making its own tree.
func (l Layout) Create(uid, gid int) error {
	if uid < 0 {
		if err := os.MkdirAll(l.Root, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", l.Root, err)
		}
		for _, d := range l.OwnerDirs() {
			if err := os.MkdirAll(d, 0o750); err != nil {
				return fmt.Errorf("create %s: %w", d, err)
			}
		}
		return nil
	}
	if err := os.MkdirAll(l.Root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", l.Root, err)
	}
	root, err := l.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(root)
	if err := l.ensureSystemDir(root); err != nil {
		return err
	}
	for _, n := range ownerTree {
		if err := l.ensureOwnerDir(root, n, n.name, true, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// CreateSystemDir makes ROOT/system, root's and 0755, checking that ROOT is the
// caller's and writable by no one else; the helper calls it before it opens its
// audit log there.
func (l Layout) CreateSystemDir() error {
	root, err := l.openRoot()
	if err != nil {
		return err
	}
	defer unix.Close(root)
	return l.ensureSystemDir(root)
}

// OpenSystemDir opens ROOT/system (O_PATH) after checking ROOT and it are the
// caller's and writable by no one else: the descriptor that pid records and
// helper logs are created beneath.
func (l Layout) OpenSystemDir() (*os.File, error) {
	root, err := l.openRoot()
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, "system", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", l.SystemDir(), err)
	}
	if err := checkPrivateDir(fd, l.SystemDir()); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), l.SystemDir()), nil
}

// openRoot opens ROOT by descriptor, walking from / with trustfs.OpenDir: ROOT and
// every directory above it must be root's and writable by no one else (a sticky
// ancestor like /tmp is fine), none a symlink. ROOT itself may not even be sticky:
// anyone could then create the config.toml root reads.
func (l Layout) openRoot() (int, error) {
	f, err := trustfs.OpenDir(l.Root)
	if err != nil {
		return -1, fmt.Errorf("banger root %s: %w", l.Root, err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return -1, fmt.Errorf("banger root %s: %w", l.Root, err)
	}
	if err := checkPrivateDir(fd, l.Root); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// ensureSystemDir makes ROOT/system under root (a descriptor of ROOT) or accepts
// an existing one that is the caller's directory, writable by no one else.
func (l Layout) ensureSystemDir(root int) error {
	fd, err := l.ensureRootsDir(root, "system")
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// ensureRootsDir makes ROOT/name under root (a descriptor of ROOT), root's and
// 0755, or accepts an existing one that is the caller's directory, writable by no
// one else; it returns the directory's descriptor.
func (l Layout) ensureRootsDir(root int, name string) (int, error) {
	path := filepath.Join(l.Root, name)
	created := true
	if err := unix.Mkdirat(root, name, 0o755); errors.Is(err, unix.EEXIST) {
		created = false
	} else if err != nil {
		return -1, fmt.Errorf("create %s: %w", path, err)
	}
	fd, err := openDirBeneath(root, name, path)
	if err != nil {
		return -1, err
	}
	if created {
		// mkdirat's mode went through the umask; set it exactly, on the descriptor.
		if err := unix.Fchmod(fd, 0o755); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	if err := checkPrivateDir(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// OpenBinDir makes or opens ROOT/bin, root's, 0755 and writable by no one else,
// checking ROOT up to / on the way; `system run` copies the binaries it starts
// beneath the descriptor it returns.
func (l Layout) OpenBinDir() (*os.File, error) {
	root, err := l.openRoot()
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	fd, err := l.ensureRootsDir(root, "bin")
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), l.BinDir()), nil
}

// ensureOwnerDir makes n below the directory parent (a descriptor) and hands it to
// uid:gid, then does the same for n's children. parentWasRoots says the parent was
// the caller's before this call handed it over: then nothing in it can have been
// placed by the owner, and a directory of the caller's found there may be handed
// over too.
func (l Layout) ensureOwnerDir(parent int, n dirNode, rel string, parentWasRoots bool, uid, gid int) error {
	path := filepath.Join(l.Root, rel)
	created := true
	if err := unix.Mkdirat(parent, n.name, 0o750); errors.Is(err, unix.EEXIST) {
		created = false // possibly a symlink or a file: the open below says
	} else if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	fd, err := openDirBeneath(parent, n.name, path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	wasRoots := false
	switch {
	case int(st.Uid) == uid:
		// The owner's already (from an earlier run, or raced in by the owner itself):
		// leave it as it is; its content is the owner's to choose.
	case int(st.Uid) == os.Geteuid() && (created || parentWasRoots):
		wasRoots = true
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("chown %s to %d:%d: %w", path, uid, gid, err)
		}
		if err := unix.Fchmod(fd, 0o750); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
	default:
		return fmt.Errorf("%s belongs to uid %d, not to the owner %d: banger will not hand over what it did not create; if this root was prepared for another owner, chown -R %d:%d %s, or use another --root", path, st.Uid, uid, uid, gid, path)
	}
	for _, c := range n.children {
		if err := l.ensureOwnerDir(fd, c, filepath.Join(rel, c.name), wasRoots, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// openDirBeneath opens the directory name in parent without following a symlink,
// and says plainly what else it found there.
func openDirBeneath(parent int, name, path string) (int, error) {
	fd, err := unix.Openat2(parent, name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
	if err == nil {
		return fd, nil
	}
	var st unix.Stat_t
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, fmt.Errorf("%s is a symlink: banger refuses to follow links the owner can plant under its root; remove it (rm %s) and start again", path, path)
		}
		return -1, fmt.Errorf("%s is not a directory: remove it (rm %s) and start again", path, path)
	}
	return -1, fmt.Errorf("open %s: %w", path, err)
}

// checkPrivateDir wants fd to be a directory of the caller's (root's) that no one
// else can write.
func checkPrivateDir(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory: remove it and start again", path)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s must belong to uid %d and be writable by no one else (it is uid %d, mode %#o): chown %d %s && chmod go-w %s",
			path, os.Geteuid(), st.Uid, st.Mode&0o7777, os.Geteuid(), path, path)
	}
	return nil
}
