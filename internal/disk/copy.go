package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// Copy copies the base into the VM's directory, data extents only: holes stay holes,
// so a 1 GiB image holding 100 MB of files costs 100 MB of writes and of disk. It
// works on every filesystem and for every driver, which is why it is the last resort:
// its time grows with the base's data.
type Copy struct{}

// NewCopy returns the sparse-copy strategy.
func NewCopy() *Copy { return &Copy{} }

// Name implements Strategy.
func (*Copy) Name() string { return NameCopy }

// Format implements Strategy.
func (*Copy) Format() Format { return FormatRaw }

// Available needs only e2fsprogs' resize2fs, used when a disk is grown; without it
// the strategy is still refused, so that --disk never half-works.
func (*Copy) Available(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return needTools("e2fsck", "resize2fs")
}

// Clone implements Strategy.
func (*Copy) Clone(ctx context.Context, base string, req CloneRequest) (Disk, error) {
	return cloneRawFile(ctx, NameCopy, base, req, sparseCopy)
}

// Remove implements Strategy.
func (*Copy) Remove(ctx context.Context, d Disk) error { return removeAs(NameCopy, d) }

// copyChunk bounds one copy_file_range call so that cancellation is noticed.
const copyChunk = 64 << 20

// sparseCopy copies src's data extents (found with SEEK_DATA/SEEK_HOLE) into dst and
// sets dst's size to size, leaving every hole of src a hole in dst. The kernel copies
// with copy_file_range (on filesystems with reflinks it may even share the extents);
// where that is refused it falls back to reading and writing, still skipping blocks
// of zeros.
func sparseCopy(ctx context.Context, dst, src *os.File, size int64) error {
	sfd := int(src.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			// No SEEK_DATA here: treat the rest as data; copyRange skips zeros.
			data = off
		} else if err != nil {
			return fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if hole > size {
			hole = size
		}
		if err := copyRange(ctx, dst, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("set size: %w", err)
	}
	return nil
}

// copyRange copies n bytes at off from src to the same offset in dst.
func copyRange(ctx context.Context, dst, src *os.File, off, n int64) error {
	roff, woff, end := off, off, off+n
	for roff < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := min(end-roff, copyChunk)
		got, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(want), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				return copyRangeRW(ctx, dst, src, roff, end-roff)
			}
			return fmt.Errorf("copy_file_range at %d: %w", roff, err)
		}
		if got == 0 {
			return fmt.Errorf("copy_file_range at %d: source ended early: %w", roff, io.ErrUnexpectedEOF)
		}
	}
	return nil
}

// copyRangeRW is copyRange by read and write, leaving all-zero blocks unwritten.
func copyRangeRW(ctx context.Context, dst, src *os.File, off, n int64) error {
	buf := make([]byte, 1<<20)
	zero := make([]byte, blockSize)
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), n)]
		got, err := src.ReadAt(chunk, off)
		if got == 0 && err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		for i := 0; i < got; i += blockSize {
			b := chunk[i:min(i+blockSize, got)]
			if bytes.Equal(b, zero[:len(b)]) {
				continue
			}
			if _, err := dst.WriteAt(b, off+int64(i)); err != nil {
				return fmt.Errorf("write at %d: %w", off+int64(i), err)
			}
		}
		off += int64(got)
		n -= int64(got)
	}
	return nil
}

// needTools returns an ErrUnavailable error naming the first missing tool.
func needTools(tools ...string) error {
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install %s): %w", t, packageOf(t), ErrUnavailable)
		}
	}
	return nil
}

// packageOf names the Debian package that provides tool, for messages.
func packageOf(tool string) string {
	switch tool {
	case "qemu-img", "qemu-io", "qemu-storage-daemon":
		return "qemu-utils"
	case "dmsetup":
		return "dmsetup"
	}
	return "e2fsprogs"
}
