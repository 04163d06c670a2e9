package initsys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// mountSpec is one filesystem PID 1 mounts. Required ones fail the boot: without
// /proc, /sys, /dev and /dev/pts nothing the agent does works (no ptys, no exec of
// anything that reads /proc).
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	required               bool
	// keepExisting skips the mount when one of the same type is there already:
	// the kernel mounts devtmpfs itself with CONFIG_DEVTMPFS_MOUNT, and devtmpfs
	// is one instance system-wide anyway. Everything else is mounted fresh, so
	// that in a new PID or network namespace /proc and /sys show that namespace.
	keepExisting bool
}

func defaultMounts() []mountSpec {
	const common = unix.MS_NOSUID | unix.MS_NODEV
	return []mountSpec{
		{"proc", "/proc", "proc", common | unix.MS_NOEXEC, "", true, false},
		{"sysfs", "/sys", "sysfs", common | unix.MS_NOEXEC, "", true, false},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", true, true},
		// a private devpts instance; /dev/ptmx is bound to its ptmx below
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", true, false},
		{"tmpfs", "/dev/shm", "tmpfs", common, "mode=1777", false, false},
		{"tmpfs", "/run", "tmpfs", common, "mode=0755", false, false},
		{"tmpfs", "/tmp", "tmpfs", common, "mode=1777", false, false},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", common | unix.MS_NOEXEC, "", false, true},
	}
}

// mountAll mounts specs in order and returns the targets it mounted. It stops at
// the first required failure; optional failures are collected and the rest go on.
func mountAll(specs []mountSpec) (mounted []string, optional error, required error) {
	var errs []error
	for _, m := range specs {
		did, err := mountOne(m)
		if did {
			mounted = append(mounted, m.target)
		}
		if err != nil {
			if m.required {
				return mounted, errors.Join(errs...), err
			}
			errs = append(errs, err)
		}
	}
	return mounted, errors.Join(errs...), nil
}

func mountOne(m mountSpec) (bool, error) {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return false, fmt.Errorf("mount %s: %w", m.target, err)
	}
	if m.keepExisting {
		if mounted, err := isMountedAs(m.target, m.fstype); err == nil && mounted {
			return false, nil
		}
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		if errors.Is(err, unix.EBUSY) {
			// the same instance is mounted there already (e.g. sysfs of this
			// network namespace, mounted by whoever created it)
			if mounted, serr := isMountedAs(m.target, m.fstype); serr == nil && mounted {
				return false, nil
			}
		}
		return false, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return true, nil
}

// isMountedAs reports whether target is a mount point of fstype, by comparing with
// its parent's device and checking the filesystem magic.
func isMountedAs(target, fstype string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return false, err
	}
	if err := unix.Stat(filepath.Dir(target), &parent); err != nil {
		return false, err
	}
	if st.Dev == parent.Dev && target != "/" {
		return false, nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(target, &fs); err != nil {
		return false, err
	}
	magic := map[string]int64{
		"proc": unix.PROC_SUPER_MAGIC, "sysfs": unix.SYSFS_MAGIC, "devtmpfs": unix.TMPFS_MAGIC,
		"devpts": unix.DEVPTS_SUPER_MAGIC, "tmpfs": unix.TMPFS_MAGIC, "cgroup2": unix.CGROUP2_SUPER_MAGIC,
	}[fstype]
	return int64(fs.Type) == magic, nil
}

// devLinks creates the /dev entries udev would: the standard fd links where they
// are missing, and /dev/ptmx as a bind mount of our devpts instance's ptmx. A bind
// mount rather than replacing the node: devtmpfs is one instance system-wide, and
// the mount stays private to this mount namespace.
func devLinks(dev string) error {
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
	}
	var errs []error
	for _, l := range links {
		p := filepath.Join(dev, l[1])
		if err := os.Symlink(l[0], p); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, fmt.Errorf("link %s: %w", p, err))
		}
	}
	ptmx := filepath.Join(dev, "ptmx")
	if _, err := os.Lstat(ptmx); errors.Is(err, os.ErrNotExist) {
		if f, err := os.OpenFile(ptmx, os.O_CREATE|os.O_WRONLY, 0o666); err == nil {
			f.Close()
		}
	}
	if err := unix.Mount(filepath.Join(dev, "pts", "ptmx"), ptmx, "", unix.MS_BIND, ""); err != nil {
		errs = append(errs, fmt.Errorf("bind %s: %w", ptmx, err))
	}
	return errors.Join(errs...)
}

// virtioPortLinks creates /dev/virtio-ports/<name> → ../vportNpM for every named
// virtio-serial port, as udev's rule does; the agent finds its channel by name.
func virtioPortLinks(sys, dev string) (int, error) {
	entries, err := os.ReadDir(filepath.Join(sys, "class", "virtio-ports"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // no virtio-serial device: fine under Firecracker
	}
	if err != nil {
		return 0, fmt.Errorf("list virtio ports: %w", err)
	}
	dir := filepath.Join(dev, "virtio-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("virtio ports: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range entries {
		name, err := os.ReadFile(filepath.Join(sys, "class", "virtio-ports", e.Name(), "name"))
		if err != nil || len(name) == 0 {
			continue // an unnamed port
		}
		portName := string(trimNewline(name))
		if portName == "" || portName == "." || portName == ".." || filepath.Base(portName) != portName {
			errs = append(errs, fmt.Errorf("virtio port %s: unusable name %q", e.Name(), portName))
			continue
		}
		link := filepath.Join(dir, portName)
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join("..", e.Name()), link); err != nil {
			errs = append(errs, fmt.Errorf("virtio port link %s: %w", link, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}
