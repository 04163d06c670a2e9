package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Loop is one bound loop device as sysfs describes it.
type Loop struct {
	Device string `json:"device"` // /dev/loopN
	// BackingFile is the path the backing file was opened by, without the
	// " (deleted)" suffix the kernel adds once that path is unlinked.
	BackingFile string `json:"backing_file"`
	Deleted     bool   `json:"deleted,omitempty"` // the backing file's path was unlinked
	ReadOnly    bool   `json:"read_only,omitempty"`
	// Autoclear: the kernel detaches the device when its last opener closes it.
	Autoclear bool `json:"autoclear,omitempty"`
	// Holders are the block devices stacked on this one (dm-N for a device-mapper
	// table); a mount is not a holder.
	Holders []string `json:"holders,omitempty"`
}

// Paths the loop functions use. Variables of a struct would be overkill: these are
// the kernel's fixed interfaces.
const (
	loopControl = "/dev/loop-control"
	sysBlock    = "/sys/block"
)

// maxAttachAttempts bounds the retries when another process (another banger call, a
// concurrent `losetup -f`, a `mount -o loop`) binds the device that LOOP_CTL_GET_FREE
// just handed us: the kernel reserves nothing between the two calls, so losing that
// race is normal and the answer is to ask again.
const maxAttachAttempts = 64

var loopDevRe = regexp.MustCompile(`^/dev/loop([0-9]+)$`)

// LoopAttach binds path to a free loop device and returns the device (/dev/loopN).
// With readOnly the file is opened O_RDONLY and the device is read-only: writes to it
// fail with EPERM, so a shared base image cannot be changed through it.
//
// The device is not set to autoclear: this call closes its own descriptors before it
// returns, and an autoclear device with no other opener would be torn down at that
// moment, before a device-mapper table could take it. To get autoclear semantics,
// call LoopDetach once the device has a holder; the kernel then detaches it when the
// last holder lets go.
//
// Parallel callers are safe: a device taken between LOOP_CTL_GET_FREE and
// LOOP_CONFIGURE (EBUSY) is skipped and another one asked for.
func LoopAttach(ctx context.Context, path string, readOnly bool) (dev string, err error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("loop attach %q: path must be absolute", path)
	}
	flags := os.O_RDWR
	if readOnly {
		flags = os.O_RDONLY
	}
	backing, err := os.OpenFile(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("loop attach %s: %w", path, err)
	}
	defer backing.Close()
	if st, err := backing.Stat(); err != nil {
		return "", fmt.Errorf("loop attach %s: %w", path, err)
	} else if !st.Mode().IsRegular() {
		return "", fmt.Errorf("loop attach %s: not a regular file (%s)", path, st.Mode().Type())
	}
	ctl, err := os.OpenFile(loopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("loop attach %s: %w (is the loop module loaded? modprobe loop)", path, err)
	}
	defer ctl.Close()

	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("loop attach %s: %w", path, err)
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("loop attach %s: LOOP_CTL_GET_FREE: %w", path, err)
		}
		dev = "/dev/loop" + strconv.Itoa(n)
		err = configureLoop(n, backing, path, readOnly)
		if errors.Is(err, unix.EBUSY) && attempt < maxAttachAttempts {
			continue // lost the race for this device; ask for another
		}
		if err != nil {
			return "", fmt.Errorf("loop attach %s to %s: %w", path, dev, err)
		}
		return dev, nil
	}
}

// configureLoop binds backing to loop device n.
func configureLoop(n int, backing *os.File, path string, readOnly bool) error {
	lf, err := openLoopDevice(n)
	if err != nil {
		return err
	}
	defer lf.Close()
	var info unix.LoopInfo64
	if readOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	// File_name is informational (LOOP_GET_STATUS64); sysfs shows the full path.
	copy(info.File_name[:len(info.File_name)-1], path)
	fd := int(lf.Fd())
	err = unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(backing.Fd()), Info: info})
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		if err != nil {
			return fmt.Errorf("LOOP_CONFIGURE: %w", err)
		}
		return nil
	}
	// Kernels before 5.8 have no LOOP_CONFIGURE: bind, then set the flags.
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	return nil
}

// openLoopDevice opens /dev/loopN, making the node from sysfs when /dev is not a
// devtmpfs (some containers) and LOOP_CTL_GET_FREE has just created the device.
func openLoopDevice(n int) (*os.File, error) {
	dev := "/dev/loop" + strconv.Itoa(n)
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := mknodFromSysfs(dev, filepath.Join(sysBlock, "loop"+strconv.Itoa(n), "dev")); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

func mknodFromSysfs(dev, sysDev string) error {
	b, err := os.ReadFile(sysDev)
	if err != nil {
		return fmt.Errorf("%s is missing and so is %s: %w", dev, sysDev, err)
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%s: unexpected content %q", sysDev, b)
	}
	err = unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(uint32(ma), uint32(mi))))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mknod %s: %w", dev, err)
	}
	return nil
}

// LoopDetach unbinds dev (/dev/loopN). When nothing else has the device open it is
// detached before LoopDetach returns. When something still holds it (a
// device-mapper table, a mount) the kernel marks it autoclear and detaches it when
// the last holder closes it; LoopDetach then returns nil at once. A device that is
// not bound, or no longer exists, is not an error: detaching is idempotent.
func LoopDetach(ctx context.Context, dev string) error {
	m := loopDevRe.FindStringSubmatch(dev)
	if m == nil {
		return fmt.Errorf("loop detach %q: not a loop device (want /dev/loopN)", dev)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("loop detach %s: %w", dev, err)
	}
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENXIO) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("loop detach %s: %w", dev, err)
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
	// Since Linux 5.x LOOP_CLR_FD only marks the device; the teardown happens when
	// the last opener closes it, which is this descriptor unless someone holds it.
	cerr := f.Close()
	switch {
	case errors.Is(err, unix.ENXIO):
		return nil // not bound
	case err != nil:
		return fmt.Errorf("loop detach %s: LOOP_CLR_FD: %w", dev, err)
	case cerr != nil:
		return fmt.Errorf("loop detach %s: close: %w", dev, cerr)
	}
	return nil
}

// LoopList returns the bound loop devices, sorted by device number.
func LoopList(ctx context.Context) ([]Loop, error) {
	return loopList(ctx, sysBlock)
}

func loopList(ctx context.Context, sys string) ([]Loop, error) {
	ents, err := os.ReadDir(sys)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	type numbered struct {
		n int
		l Loop
	}
	var found []numbered
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list loop devices: %w", err)
		}
		name := e.Name()
		n, err := strconv.Atoi(strings.TrimPrefix(name, "loop"))
		if !strings.HasPrefix(name, "loop") || err != nil {
			continue
		}
		dir := filepath.Join(sys, name)
		b, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not bound (or detached while we looked)
		}
		if err != nil {
			return nil, fmt.Errorf("list loop devices: %w", err)
		}
		l := Loop{Device: "/dev/" + name, BackingFile: strings.TrimSuffix(string(b), "\n")}
		if s, ok := strings.CutSuffix(l.BackingFile, " (deleted)"); ok {
			l.BackingFile, l.Deleted = s, true
		}
		l.ReadOnly = readFlag(filepath.Join(dir, "ro"))
		l.Autoclear = readFlag(filepath.Join(dir, "loop", "autoclear"))
		if hs, err := os.ReadDir(filepath.Join(dir, "holders")); err == nil {
			for _, h := range hs {
				l.Holders = append(l.Holders, h.Name())
			}
		}
		found = append(found, numbered{n, l})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].n < found[j].n })
	out := make([]Loop, len(found))
	for i, f := range found {
		out[i] = f.l
	}
	return out, nil
}

// readFlag reads a sysfs boolean ("0" or "1"); a missing file reads as false.
func readFlag(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// LoopsUnder returns the loops whose backing file lies inside dir (dir itself
// excluded). It is how banger finds the devices a VM's disk directory still holds.
func LoopsUnder(loops []Loop, dir string) []Loop {
	var out []Loop
	for _, l := range loops {
		if IsUnder(l.BackingFile, dir) {
			out = append(out, l)
		}
	}
	return out
}

// IsUnder reports whether path is strictly inside dir, lexically (both cleaned).
func IsUnder(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
