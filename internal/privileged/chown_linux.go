package privileged

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/trustfs"
)

// chownBeneath hands the jail socket rel (validated by validator.chownToOwner,
// relative to the jail base) to uid:gid without trusting the path a second time: a
// jail's /run is the owner's, who could swap what is there at any moment. The jail
// base, root's, is opened through directories only root can change
// (trustfs.OpenDir); the socket beneath it with openat2, symlinks forbidden
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); its kind, link count and owner are checked
// on that descriptor (a socket, one link, the owner's), and the chown goes through
// the same descriptor (fchownat AT_EMPTY_PATH).
func chownBeneath(jailBase, rel string, uid, gid int) error {
	base, err := trustfs.OpenDir(jailBase)
	if err != nil {
		return fmt.Errorf("jail base: %w", err)
	}
	defer base.Close()
	fd, err := unix.Openat2(int(base.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: resolveNoLinks,
	})
	if err != nil {
		return invalidf("path %s: %v (a symlink on the way is refused)", filepath.Join(jailBase, rel), err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	p := filepath.Join(jailBase, rel)
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return invalidf("path %q is a %s: the helper hands over only sockets a jailed firecracker made", p, fileKind(modeFromStat(st.Mode)))
	case st.Nlink != 1:
		return invalidf("path %q has %d hard links: the helper hands over only sockets with exactly one", p, st.Nlink)
	case int(st.Uid) != uid:
		return invalidf("path %q belongs to uid %d: a jailed firecracker runs as the owner (uid %d), so this socket is not one it made", p, st.Uid, uid)
	}
	if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", p, uid, gid, err)
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
