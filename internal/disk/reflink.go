package disk

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Reflink clones the base with FICLONE: the clone shares every extent with the base
// and the filesystem copies a block only when one side writes it. Instant and flat
// in the base's size, but only on filesystems with reflinks (XFS made with
// reflink=1, btrfs), and only when the base and the disks are on the same one.
type Reflink struct {
	disksDir  string // probed for FICLONE support
	imagesDir string // must share disksDir's filesystem; optional
}

// NewReflink returns the reflink strategy for disks under disksDir cloned from
// images under imagesDir ("" skips that check).
func NewReflink(disksDir, imagesDir string) *Reflink {
	return &Reflink{disksDir: disksDir, imagesDir: imagesDir}
}

// Name implements Strategy.
func (*Reflink) Name() string { return NameReflink }

// Format implements Strategy.
func (*Reflink) Format() Format { return FormatRaw }

// Available probes the disks directory by cloning a temporary file there: the only
// reliable test, since support depends on how the filesystem was made, not only on
// its type.
func (r *Reflink) Available(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.disksDir == "" {
		return fmt.Errorf("reflink: no disks directory configured: %w", ErrUnavailable)
	}
	if r.imagesDir != "" {
		var a, b unix.Stat_t
		if err := unix.Stat(r.disksDir, &a); err != nil {
			return fmt.Errorf("reflink: %s: %w", r.disksDir, err)
		}
		if err := unix.Stat(r.imagesDir, &b); err != nil {
			return fmt.Errorf("reflink: %s: %w", r.imagesDir, err)
		}
		if a.Dev != b.Dev {
			return fmt.Errorf("reflink: images (%s) and disks (%s) are on different filesystems; reflinks need one: %w", r.imagesDir, r.disksDir, ErrUnavailable)
		}
	}
	if err := needTools("e2fsck", "resize2fs"); err != nil {
		return err
	}
	return probeReflink(r.disksDir)
}

// probeReflink clones a one-block temporary file inside dir.
func probeReflink(dir string) (err error) {
	src, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return fmt.Errorf("reflink probe in %s: %w", dir, err)
	}
	defer func() { src.Close(); os.Remove(src.Name()) }()
	if _, err := src.Write(make([]byte, blockSize)); err != nil {
		return fmt.Errorf("reflink probe in %s: %w", dir, err)
	}
	dst, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return fmt.Errorf("reflink probe in %s: %w", dir, err)
	}
	defer func() { dst.Close(); os.Remove(dst.Name()) }()
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return fmt.Errorf("reflink: the filesystem of %s (%s) cannot clone files (FICLONE: %v); use XFS made with reflink=1, or btrfs: %w",
			dir, fsType(dir), err, ErrUnavailable)
	}
	return nil
}

// Clone implements Strategy.
func (r *Reflink) Clone(ctx context.Context, base string, req CloneRequest) (Disk, error) {
	return cloneRawFile(ctx, NameReflink, base, req, func(ctx context.Context, dst, src *os.File, _ int64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
			if errors.Is(err, unix.EXDEV) {
				return fmt.Errorf("FICLONE: the base and the disk are on different filesystems: %w", err)
			}
			return fmt.Errorf("FICLONE: %w", err)
		}
		return nil
	})
}

// Remove implements Strategy.
func (r *Reflink) Remove(ctx context.Context, d Disk) error { return removeAs(NameReflink, d) }

// fsType names the filesystem of path for messages.
func fsType(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown filesystem"
	}
	switch uint64(st.Type) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem type %#x", st.Type)
}
