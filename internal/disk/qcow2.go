package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// qcow2File is the overlay's file name inside the VM's directory.
const qcow2File = "root.qcow2"

// Qcow2 makes a qcow2 overlay whose backing file is the base: a few hundred KiB of
// metadata, made in milliseconds whatever the base's size, on any filesystem. Only
// QEMU opens it (Firecracker takes raw images only), and QEMU must be able to read
// the base at the absolute path recorded in the overlay.
//
// Growing: the overlay's virtual size is set to the requested size at once. The
// ext4 inside can only be grown through a block-level view of the overlay; banger
// gets one with qemu-storage-daemon's FUSE export where this process may mount FUSE
// (root, or fusermount3 installed). Elsewhere the Disk is marked NeedsOnlineResize
// and the guest agent grows the mounted root at boot (ext4 grows online).
type Qcow2 struct{}

// NewQcow2 returns the qcow2 overlay strategy.
func NewQcow2() *Qcow2 { return &Qcow2{} }

// Name implements Strategy.
func (*Qcow2) Name() string { return NameQcow2 }

// Format implements Strategy.
func (*Qcow2) Format() Format { return FormatQcow2 }

// Available needs qemu-img.
func (*Qcow2) Available(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return needTools("qemu-img")
}

// Clone implements Strategy.
func (q *Qcow2) Clone(ctx context.Context, base string, req CloneRequest) (_ Disk, err error) {
	p, err := newPlan(base, req)
	if err != nil {
		return Disk{}, err
	}
	if p.size%512 != 0 {
		return Disk{}, fmt.Errorf("vm %s disk: qcow2 needs a size in whole 512-byte sectors; base %s is %d bytes", p.vmID, p.base, p.baseSize)
	}
	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run())
		}
	}()
	created, err := makeDir(p.dir)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	d := Disk{VMID: p.vmID, Strategy: NameQcow2, Format: FormatQcow2, SizeBytes: p.size, Base: p.base, Dir: p.dir,
		Path: filepath.Join(p.dir, qcow2File), CreatedDir: created}
	u.add(func() error { return removeFiles(d) })
	if _, err := os.Lstat(d.Path); err == nil {
		return Disk{}, fmt.Errorf("vm %s disk: %s already exists: remove the VM's old disk first", p.vmID, d.Path)
	}
	d.Files = []string{d.Path}
	// -F raw: the backing format is stated, never probed (a probed raw base whose
	// first bytes look like qcow2 could point QEMU at any host file).
	args := []string{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", p.base, d.Path}
	if p.grow {
		args = append(args, strconv.FormatInt(p.size, 10))
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: qemu-img %s: %v: %s", p.vmID, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	if p.grow {
		if fuseGrowAvailable() == nil {
			if err := growQcow2(ctx, d.Path, p.dir); err != nil {
				return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
			}
		} else {
			d.NeedsOnlineResize = true
		}
	}
	return d, nil
}

// Remove implements Strategy.
func (*Qcow2) Remove(ctx context.Context, d Disk) error { return removeAs(NameQcow2, d) }
