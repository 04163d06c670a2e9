package initsys

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ext4ResizeFS is EXT4_IOC_RESIZE_FS from linux/ext4.h, _IOW('f', 16, __u64),
// which x/sys/unix does not name: it grows a mounted ext4 filesystem to the given
// block count, as resize2fs does for a mounted filesystem. Using it directly means
// guest images need no e2fsprogs.
const ext4ResizeFS = 0x40086610

// Growth is what GrowFS did. Sizes are statfs's (f_blocks × f_bsize), which leave
// out ext4's own metadata, so they are a little smaller than the device.
type Growth struct {
	Device        string // the block device, as major:minor
	DeviceBytes   uint64 // the size of the device
	Before, After uint64 // the filesystem's size before and after
}

// GrowFS grows the ext4 filesystem mounted at mountpoint online to fill its block
// device. The host asks for it (banger.growroot=1) when it made the VM's disk
// larger than the filesystem in it but could not grow the filesystem itself (a
// qcow2 overlay without FUSE). A filesystem that fills its device already is left
// as it is. Only ext4 (and ext2/3 mounted by the ext4 driver) can be grown.
func GrowFS(mountpoint string) (Growth, error) {
	return growFS(mountpoint, "/sys")
}

func growFS(mountpoint, sys string) (Growth, error) {
	f, err := os.Open(mountpoint)
	if err != nil {
		return Growth{}, fmt.Errorf("grow filesystem: %w", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return Growth{}, fmt.Errorf("grow filesystem %s: statfs: %w", mountpoint, err)
	}
	if fs.Type != unix.EXT4_SUPER_MAGIC {
		return Growth{}, fmt.Errorf("grow filesystem %s: it is not ext4 (filesystem magic %#x); only ext4 grows online", mountpoint, fs.Type)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Growth{}, fmt.Errorf("grow filesystem %s: stat: %w", mountpoint, err)
	}
	g := Growth{
		Device: fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)),
		Before: fs.Blocks * uint64(fs.Bsize),
	}
	if g.DeviceBytes, err = blockDeviceBytes(sys, g.Device); err != nil {
		return g, fmt.Errorf("grow filesystem %s: %w", mountpoint, err)
	}
	// f_bsize is the ext4 block size. Like resize2fs, end on a page boundary when
	// blocks are smaller than a page; the kernel itself trims a last block group
	// too small to hold its own metadata.
	bsize := uint64(fs.Bsize)
	blocks := g.DeviceBytes / bsize
	if page := uint64(os.Getpagesize()); page > bsize {
		blocks &^= page/bsize - 1
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ext4ResizeFS, uintptr(unsafe.Pointer(&blocks))); errno != 0 {
		hint := ""
		if errno == unix.EPERM {
			hint = " (resizing needs CAP_SYS_RESOURCE)"
		}
		return g, fmt.Errorf("grow filesystem %s on device %s to %d blocks of %d bytes: EXT4_IOC_RESIZE_FS: %w%s", mountpoint, g.Device, blocks, bsize, errno, hint)
	}
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return g, fmt.Errorf("grow filesystem %s: statfs after resizing: %w", mountpoint, err)
	}
	g.After = fs.Blocks * bsize
	return g, nil
}

// blockDeviceBytes reads a block device's size from sysfs (in 512-byte sectors
// whatever the device's own sector size), which needs no device node: the root
// device of a guest often has none under a name we could guess (/dev/root).
func blockDeviceBytes(sys, majMin string) (uint64, error) {
	p := filepath.Join(sys, "dev", "block", majMin, "size")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("size of block device %s: %w", majMin, err)
	}
	sectors, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of block device %s: %s: %w", majMin, p, err)
	}
	return sectors * 512, nil
}
