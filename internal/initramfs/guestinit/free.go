package guestinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// freeInitramfs deletes the initramfs's files, as switch_root(8) does, so
// that the modules and this binary do not hold guest memory for the life of
// the VM (rootfs is a ramfs or tmpfs: its files are memory). Only files on
// the root's own device are removed; mounts (the new root, and whatever else
// is mounted) are left alone. It refuses to run on any other kind of root.
func freeInitramfs() error {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err != nil {
		return fmt.Errorf("statfs /: %w", err)
	}
	if sfs.Type != unix.RAMFS_MAGIC && sfs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("/ is not an initramfs (filesystem magic %#x); nothing deleted", sfs.Type)
	}
	var st unix.Stat_t
	if err := unix.Lstat("/", &st); err != nil {
		return fmt.Errorf("stat /: %w", err)
	}
	return removeSameDev("/", st.Dev, true)
}

// removeSameDev removes dir's contents that live on device dev, and dir
// itself unless it is the top.
func removeSameDev(dir string, dev uint64, top bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Dev != dev {
			continue // a mount point: the new root
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := removeSameDev(p, dev, false); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, fmt.Errorf("unlink %s: %w", p, err))
		}
	}
	if !top {
		// A directory that holds a mount point cannot go; that is expected.
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
