package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dmControl is device-mapper's control node; without it there is no device-mapper.
const dmControl = "/dev/mapper/control"

// MapperDir is where device-mapper nodes appear: /dev/mapper/NAME.
const MapperDir = "/dev/mapper"

var dmNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,126}$`)

// ValidateDMName accepts names that are safe as a dmsetup argument and a file name
// under /dev/mapper: letters, digits and ._+- , at most 127 bytes.
func ValidateDMName(name string) error {
	if !dmNameRe.MatchString(name) {
		return fmt.Errorf("device-mapper name %q is invalid: use letters, digits and ._+- (at most 127)", name)
	}
	return nil
}

// DMAvailable returns nil when device-mapper can be used here, or an error saying
// what is missing and how to get it. It asks the kernel (dmVersion) rather than
// trusting the control node's existence: any dmsetup run creates
// /dev/mapper/control, even on a kernel with no device-mapper driver, where every
// later dmsetup call fails with "No such device".
func DMAvailable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := dmVersion(dmControl); err != nil {
		return err
	}
	if _, err := exec.LookPath("dmsetup"); err != nil {
		return fmt.Errorf("device-mapper is not available: dmsetup is not installed (apt-get install dmsetup)")
	}
	return nil
}

// dmVersion asks the device-mapper driver behind control for its ioctl interface
// version (DM_VERSION), which only a kernel with device-mapper answers.
func dmVersion(control string) ([3]uint32, error) {
	fd, err := unix.Open(control, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return [3]uint32{}, fmt.Errorf("device-mapper is not available: %s is missing (the kernel has no device-mapper, or its module is not loaded: try `modprobe dm_snapshot`)", control)
	case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
		return [3]uint32{}, fmt.Errorf("device-mapper is not available: %s exists but no driver answers it (%v): this kernel has no device-mapper, or its module is not loaded: try `modprobe dm_snapshot`", control, err)
	case err != nil:
		return [3]uint32{}, fmt.Errorf("device-mapper is not available: open %s: %w", control, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return [3]uint32{}, fmt.Errorf("device-mapper is not available: %s: %w", control, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return [3]uint32{}, fmt.Errorf("device-mapper is not available: %s is not a character device", control)
	}
	io := unix.DmIoctl{
		Version:    [3]uint32{unix.DM_VERSION_MAJOR, 0, 0},
		Data_size:  uint32(unsafe.Sizeof(unix.DmIoctl{})),
		Data_start: uint32(unsafe.Sizeof(unix.DmIoctl{})),
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.DM_VERSION), uintptr(unsafe.Pointer(&io))); errno != 0 {
		return [3]uint32{}, fmt.Errorf("device-mapper is not available: %s does not answer DM_VERSION (%v): it is not device-mapper's control node, or the driver is missing", control, errno)
	}
	if io.Version[0] != unix.DM_VERSION_MAJOR {
		return io.Version, fmt.Errorf("device-mapper is not available: its interface version %d.%d.%d is not %d.x", io.Version[0], io.Version[1], io.Version[2], unix.DM_VERSION_MAJOR)
	}
	return io.Version, nil
}

// DMCreate creates device NAME from table (one target per line, as dmsetup takes it
// on stdin) and returns its node, /dev/mapper/NAME. It neither waits for nor relies
// on udev: the node is made with `dmsetup mknodes`, so this works in containers.
// A failure leaves no device behind.
func DMCreate(ctx context.Context, name, table string) (dev string, err error) {
	if err := ValidateDMName(name); err != nil {
		return "", err
	}
	if strings.TrimSpace(table) == "" {
		return "", fmt.Errorf("device-mapper %s: empty table", name)
	}
	if _, err := run(ctx, table, "dmsetup", "create", "--noudevsync", name); err != nil {
		return "", fmt.Errorf("device-mapper create %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = DMRemove(context.WithoutCancel(ctx), name)
		}
	}()
	if _, err := run(ctx, "", "dmsetup", "mknodes", name); err != nil {
		return "", fmt.Errorf("device-mapper create %s: make node: %w", name, err)
	}
	return MapperDir + "/" + name, nil
}

// DMRemove removes device NAME. A device that does not exist is not an error.
// dmsetup's --retry rides out a short-lived opener (udev's blkid probe).
func DMRemove(ctx context.Context, name string) error {
	if err := ValidateDMName(name); err != nil {
		return err
	}
	_, err := run(ctx, "", "dmsetup", "remove", "--retry", "--noudevsync", name)
	if err == nil {
		return nil
	}
	names, lerr := DMList(ctx)
	if lerr == nil && !contains(names, name) {
		return nil // already gone
	}
	return fmt.Errorf("device-mapper remove %s: %w (is it still open? a VMM or a mount may hold it)", name, err)
}

// DMList returns the names of all device-mapper devices, banger's or not.
func DMList(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "", "dmsetup", "ls")
	if err != nil {
		return nil, fmt.Errorf("device-mapper list: %w", err)
	}
	return parseDMList(out), nil
}

// parseDMList reads `dmsetup ls`: one "NAME\t(MAJ:MIN)" (or "(MAJ, MIN)") line per
// device, or "No devices found".
func parseDMList(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "No devices found" {
			continue
		}
		name, _, _ := strings.Cut(line, "\t")
		if f := strings.Fields(name); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
