package privileged

import (
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
)

// chownBeneath hands t (validated by validator.chownToOwner) to uid:gid without
// trusting the path a second time. The owner can rewrite the tree under the root at
// any moment, so a path-based chown after a path-based check could be raced into
// chowning /etc/shadow through a freshly planted symlink. Instead the file is opened
// with openat2 beneath the root with symlinks forbidden (RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), its kind, link count and owner are checked on that descriptor,
// and the chown goes through the same descriptor (fchownat AT_EMPTY_PATH).
func chownBeneath(v validator, t chownTarget, uid, gid int) error {
	rootFD, err := unix.Open(t.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open banger root %s: %w", t.Root, err)
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, t.Rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("open %s beneath %s: %w", t.Rel, t.Root, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", t.Rel, err)
	}
	facts := fileFacts{mode: modeFromStat(st.Mode), nlink: uint64(st.Nlink), uid: int(st.Uid)}
	if e := v.checkChownFile(t.Rel, facts); e != nil {
		return e
	}
	if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", t.Rel, uid, gid, err)
	}
	return nil
}

// modeFromStat converts st_mode's file type to fs.FileMode type bits.
func modeFromStat(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	return mode
}
