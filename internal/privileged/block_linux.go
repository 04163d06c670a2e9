package privileged

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// fuseSuperMagic is statfs's f_type of a FUSE filesystem.
const fuseSuperMagic = 0x65735546

// openLoopFile opens t (validated by validator.loopAttach) for LoopAttach without
// trusting its path a second time, as chownBeneath does: O_PATH beneath the resolved
// root with every symlink refused, then the file rules checked again on the
// descriptor. The caller binds exactly this file by handing /proc/self/fd/N to
// blockdev, so a path swapped after validation cannot lead anywhere else. A file on
// FUSE is refused: its server is the owner's process, and a loop over it could stall
// the helper (and the kernel's I/O on it) for as long as that process likes.
func openLoopFile(v validator, t loopTarget, shown string) (*os.File, error) {
	rootFD, err := unix.Open(t.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open banger root %s: %w", t.Root, err)
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, t.Rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, invalidf("path %q changed while it was being checked (open %s beneath %s: %v): retry", shown, t.Rel, t.Root, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(t.Root, t.Rel))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", shown, err)
	}
	facts := fileFacts{mode: modeFromStat(st.Mode), nlink: uint64(st.Nlink), uid: int(st.Uid)}
	if e := v.checkLoopFile(shown, facts, st.Size); e != nil {
		f.Close()
		return nil, e
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		f.Close()
		return nil, fmt.Errorf("statfs %s: %w", shown, err)
	}
	if sfs.Type == fuseSuperMagic {
		f.Close()
		return nil, invalidf("path %q is on a FUSE filesystem: the helper binds only files on kernel filesystems", shown)
	}
	return f, nil
}

// devPaths are where the kernel shows block devices. The zero value means the real
// ones; tests point them at a temporary tree.
type devPaths struct {
	mapperDir   string // device-mapper nodes: /dev/mapper
	devDir      string // /dev, where /dev/dm-N lives
	sysDevBlock string // /sys/dev/block, MAJ:MIN -> the device's sysfs directory
}

func (d devPaths) withDefaults() devPaths {
	if d.mapperDir == "" {
		d.mapperDir = "/dev/mapper"
	}
	if d.devDir == "" {
		d.devDir = "/dev"
	}
	if d.sysDevBlock == "" {
		d.sysDevBlock = "/sys/dev/block"
	}
	return d
}

var dmNodeRe = regexp.MustCompile(`^dm-[0-9]+$`)

// chownDMNode hands device-mapper device name's nodes to uid:gid: /dev/mapper/NAME (a
// block node, as `dmsetup mknodes` makes it, or udev's symlink to ../dm-N) and
// /dev/dm-N. Every node is opened O_PATH without following symlinks, must be a block
// device whose number sysfs says is the dm device called name, and is chowned through
// that descriptor. /dev is root's, so no other user can swap a node in between; the
// check guards against a table or a udev rule that put something else there.
//
// Where udev runs, a later "change" event may re-apply its rules and give the node
// back to root:disk; banger does not install a udev rule (see the package report).
func chownDMNode(d devPaths, name string, uid, gid int) error {
	p := filepath.Join(d.mapperDir, name)
	fd, st, err := openNode(p)
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		target, err := readlinkFD(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("read symlink %s: %w", p, err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(d.mapperDir, target)
		}
		target = filepath.Clean(target)
		if filepath.Dir(target) != filepath.Clean(d.devDir) || !dmNodeRe.MatchString(filepath.Base(target)) {
			return fmt.Errorf("%s is a symlink to %s, not to a %s/dm-N node", p, target, d.devDir)
		}
		p = target
		if fd, st, err = openNode(p); err != nil {
			return err
		}
	}
	defer unix.Close(fd)
	sysDir, err := checkDMNode(d, p, st, name)
	if err != nil {
		return err
	}
	if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", p, uid, gid, err)
	}
	// The same device under its kernel name, /dev/dm-N, if /dev shows it.
	dmN := filepath.Join(d.devDir, filepath.Base(sysDir))
	if dmN == p || !dmNodeRe.MatchString(filepath.Base(sysDir)) {
		return nil
	}
	fd2, st2, err := openNode(dmN)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	defer unix.Close(fd2)
	if st2.Mode&unix.S_IFMT != unix.S_IFBLK || st2.Rdev != st.Rdev {
		return fmt.Errorf("%s is not the block device %d:%d that %s is", dmN, unix.Major(st.Rdev), unix.Minor(st.Rdev), p)
	}
	if err := unix.Fchownat(fd2, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", dmN, uid, gid, err)
	}
	return nil
}

// openNode opens p with O_PATH, not following a final symlink, and stats it. The
// error keeps os.IsNotExist working.
func openNode(p string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, st, &os.PathError{Op: "open", Path: p, Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return fd, st, nil
}

// checkDMNode checks that st (of node p) is the block device sysfs calls the dm
// device name, and returns that device's sysfs directory (…/block/dm-N).
func checkDMNode(d devPaths, p string, st unix.Stat_t, name string) (string, error) {
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("%s is a %s, not a block device", p, fileKind(modeFromStat(st.Mode)))
	}
	num := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	sys := filepath.Join(d.sysDevBlock, num)
	b, err := os.ReadFile(filepath.Join(sys, "dm", "name"))
	if err != nil {
		return "", fmt.Errorf("%s is block device %s, which is not a device-mapper device: %w", p, num, err)
	}
	if got := strings.TrimSpace(string(b)); got != name {
		return "", fmt.Errorf("%s is block device %s, which is device-mapper device %q, not %q", p, num, got, name)
	}
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", sys, err)
	}
	return real, nil
}

// readlinkFD reads the target of a symlink opened with O_PATH|O_NOFOLLOW.
func readlinkFD(fd int) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
