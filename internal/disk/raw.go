package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/blockdev"
)

// rawFile is the file name of a raw clone inside the VM's directory.
const rawFile = "root.img"

// cloneRawFile is the transactional skeleton shared by the strategies whose disk is
// one raw file in the VM's directory (reflink, copy): make the directory, make the
// file with fill, grow it, and undo all of it if any step fails.
func cloneRawFile(ctx context.Context, strategy, base string, req CloneRequest,
	fill func(ctx context.Context, dst, src *os.File, size int64) error) (_ Disk, err error) {
	p, err := newPlan(base, req)
	if err != nil {
		return Disk{}, err
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
	// d is a local, not the named result: the undo closure must see the Disk being
	// built, not the zero value a failing return assigns to the result.
	d := Disk{VMID: p.vmID, Strategy: strategy, Format: FormatRaw, SizeBytes: p.size, Base: p.base, Dir: p.dir,
		Path: filepath.Join(p.dir, rawFile), CreatedDir: created}
	d.Files = []string{d.Path}
	u.add(func() error { return removeFiles(d) })

	src, err := os.Open(p.base)
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	defer src.Close()
	// O_EXCL: a leftover file is never silently reused, nor one another VM owns.
	dst, err := os.OpenFile(d.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		d.Files = nil // not ours: do not let the undo delete it
		return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
	}
	err = fill(ctx, dst, src, p.baseSize)
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return Disk{}, fmt.Errorf("vm %s disk: %s %s: %w", p.vmID, strategy, p.base, err)
	}
	if p.grow {
		if err := growRaw(ctx, d.Path, p.size); err != nil {
			return Disk{}, fmt.Errorf("vm %s disk: %w", p.vmID, err)
		}
	}
	return d, nil
}

// growRaw extends a raw image file to size (the new space is a hole) and grows the
// ext4 filesystem in it to match.
func growRaw(ctx context.Context, path string, size int64) error {
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("grow %s to %s: %w", path, FormatSize(size), err)
	}
	return blockdev.GrowExt4(ctx, path)
}
