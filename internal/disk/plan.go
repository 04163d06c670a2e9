package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"banger/internal/blockdev"

	"golang.org/x/sys/unix"
)

// blockSize is the unit disk sizes are rounded up to: ext4's usual block size, and a
// multiple of the 512-byte sector device-mapper and qcow2 count in.
const blockSize = 4096

var vmIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// plan is a validated clone request: what every strategy checks before it makes
// anything.
type plan struct {
	base     string // absolute path of the base image
	baseSize int64
	size     int64 // the disk's final size, >= baseSize
	grow     bool  // size > baseSize: the filesystem must be grown
	vmID     string
	dir      string
}

// newPlan validates base and req. It touches nothing.
func newPlan(base string, req CloneRequest) (plan, error) {
	if !vmIDRe.MatchString(req.VMID) {
		return plan{}, fmt.Errorf("disk for vm %q: invalid vm id (want letters, digits, - and _, at most 64)", req.VMID)
	}
	if !filepath.IsAbs(req.Dir) || filepath.Clean(req.Dir) != req.Dir || req.Dir == "/" {
		return plan{}, fmt.Errorf("vm %s disk: directory %q must be a clean absolute path below /", req.VMID, req.Dir)
	}
	if !filepath.IsAbs(base) {
		return plan{}, fmt.Errorf("vm %s disk: base image %q must be an absolute path", req.VMID, base)
	}
	st, err := os.Stat(base)
	if err != nil {
		return plan{}, fmt.Errorf("vm %s disk: base image: %w", req.VMID, err)
	}
	if !st.Mode().IsRegular() || st.Size() == 0 {
		return plan{}, fmt.Errorf("vm %s disk: base image %s is not a non-empty regular file", req.VMID, base)
	}
	p := plan{base: base, baseSize: st.Size(), size: st.Size(), vmID: req.VMID, dir: req.Dir}
	switch {
	case req.SizeBytes < 0:
		return plan{}, fmt.Errorf("vm %s disk: size %d is negative", req.VMID, req.SizeBytes)
	case req.SizeBytes > 0:
		size := roundUp(req.SizeBytes, blockSize)
		if size < p.baseSize {
			return plan{}, fmt.Errorf("vm %s disk: size %s is smaller than its image (%s): pass --disk %s or more: %w",
				req.VMID, FormatSize(req.SizeBytes), FormatSize(p.baseSize), FormatSize(roundUp(p.baseSize, 1<<20)), ErrTooSmall)
		}
		p.size, p.grow = size, size > p.baseSize
	}
	return p, nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// undo is the list of steps that reverse what a Clone has made so far; on failure
// they run in reverse order. Each step must be safe to run on its own.
type undo []func() error

func (u *undo) add(step func() error) { *u = append(*u, step) }

// run reverses every step, newest first, and returns their errors joined.
func (u undo) run() error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		errs = append(errs, u[i]())
	}
	return errors.Join(errs...)
}

// makeDir creates the VM's directory if it is missing (its parent must exist) and
// says whether it did, so that only a directory Clone made is removed.
func makeDir(dir string) (created bool, err error) {
	err = os.Mkdir(dir, 0o750)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrExist) {
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return false, nil
		}
	}
	return false, fmt.Errorf("disk directory: %w", err)
}

// removeFiles deletes d's files and, if Clone made it, d's directory once empty. It
// refuses any file outside d.Dir: a Disk comes back from storage, and Remove must
// never be talked into deleting something that is not a disk. Missing files are fine.
func removeFiles(d Disk) error {
	var errs []error
	for _, f := range d.Files {
		if !blockdev.IsUnder(f, d.Dir) {
			errs = append(errs, fmt.Errorf("vm %s disk: refusing to remove %s, which is outside the disk directory %s", d.VMID, f, d.Dir))
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("vm %s disk: %w", d.VMID, err))
		}
	}
	if d.CreatedDir && len(errs) == 0 {
		// Something else in the directory (the VM's own files) keeps it; that is the
		// VM service's to remove, not a failure of this disk.
		if err := os.Remove(d.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("vm %s disk: %w", d.VMID, err))
		}
	}
	return errors.Join(errs...)
}

// removeAs is Remove for the strategies whose disks are only files. It refuses a
// disk another strategy made: deleting a dm-snapshot disk's files while its devices
// still exist would leave them unreachable.
func removeAs(strategy string, d Disk) error {
	if d.Strategy != strategy {
		return fmt.Errorf("vm %s disk: made by %q, not %s: remove it with its own strategy", d.VMID, d.Strategy, strategy)
	}
	return removeFiles(d)
}
