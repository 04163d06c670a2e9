package firecracker

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/consolelog"
	"banger/internal/termsafe"
	"banger/internal/vmm"
)

// validate checks a spec before anything is created, so the common mistakes
// get an error that says what to fix rather than Firecracker's.
func validate(s vmm.Spec) error {
	var errs []error
	if s.CPUs < 1 || s.CPUs > 32 {
		errs = append(errs, fmt.Errorf("cpus %d: Firecracker takes 1 to 32", s.CPUs))
	}
	if s.MemoryMiB < 1 {
		errs = append(errs, fmt.Errorf("memory %d MiB: want at least 1", s.MemoryMiB))
	}
	if err := vmm.CheckFile("kernel", s.Kernel); err != nil {
		errs = append(errs, err)
	}
	if s.Initrd != "" {
		if err := vmm.CheckFile("initrd", s.Initrd); err != nil {
			errs = append(errs, err)
		}
	}
	switch s.Root.Format {
	case "raw":
		if err := vmm.CheckFile("root disk", s.Root.Path); err != nil {
			errs = append(errs, err)
		} else if !s.Root.ReadOnly {
			if err := unix.Access(s.Root.Path, unix.W_OK); err != nil {
				errs = append(errs, fmt.Errorf("root disk %s is not writable: %w", s.Root.Path, err))
			}
		}
	case "qcow2":
		errs = append(errs, fmt.Errorf("root disk %s is qcow2: Firecracker reads raw images only; give the VM a raw disk (or use the qemu driver)", s.Root.Path))
	default:
		errs = append(errs, fmt.Errorf("root disk format %q: Firecracker takes raw only", s.Root.Format))
	}
	if s.VsockCID < 3 {
		errs = append(errs, fmt.Errorf("vsock CID %d: the agent's channel needs one, 3 or more (0-2 are reserved)", s.VsockCID))
	}
	if fi, err := os.Stat(s.RunDir); s.RunDir == "" || err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("runtime directory %q must exist (the VMService creates it)", s.RunDir))
	}
	if s.ConsoleLog == "" {
		errs = append(errs, errors.New("no console log path"))
	} else if fi, err := os.Stat(filepath.Dir(s.ConsoleLog)); err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("console log directory %s must exist", filepath.Dir(s.ConsoleLog)))
	}
	if s.Tap != "" {
		if len(s.Tap) > 15 || strings.ContainsAny(s.Tap, "/ \t\n") {
			errs = append(errs, fmt.Errorf("tap name %q is not a network interface name (1-15 bytes)", s.Tap))
		}
		if s.MAC != "" {
			if hw, err := net.ParseMAC(s.MAC); err != nil || len(hw) != 6 {
				errs = append(errs, fmt.Errorf("mac %q: want aa:bb:cc:dd:ee:ff", s.MAC))
			}
		}
	}
	return errors.Join(errs...)
}

// rootDevice is the device Firecracker names in the root= it appends.
const rootDevice = "/dev/vda"

// bootArgs is the guest's kernel command line: the driver's parameters, then
// the spec's. A parameter of the driver's that the spec sets already is left
// out, so the VMService can override any of them; the driver's go first so
// they stay before a "--" (after which the kernel hands words to init).
//
//	console=ttyS0   the serial port, which Firecracker writes to its stdout:
//	                the console log
//	reboot=k        reboot through the keyboard controller: Firecracker exits
//	                on it, which graceful Stop relies on (Configure enforces
//	                k: EnsureRebootK)
//	panic=1         a panicking guest reboots after a second, and so ends
//	                Firecracker instead of leaving a dead guest running
//	banger.poweroff=reboot
//	                banger-agent turns a power-off (a finished workload, a
//	                shutdown request) into a reboot: on x86 Firecracker has no
//	                ACPI power-off, and a halted guest would leave it running
//
// Firecracker itself appends pci=off and, for the root drive,
// "root=/dev/vda rw|ro", so a root=/dev/vda in the spec is dropped rather than
// given twice; any other root= is an error: the root drive is /dev/vda.
func bootArgs(spec string) (string, error) {
	head, tail, hasInitArgs := strings.Cut(spec, " -- ")
	if !hasInitArgs && strings.HasPrefix(spec, "-- ") {
		head, tail, hasInitArgs = "", strings.TrimPrefix(spec, "-- "), true
	}
	have := map[string]bool{}
	var theirs []string
	for _, w := range strings.Fields(head) {
		k, v, _ := strings.Cut(w, "=")
		if k == "root" {
			if v != rootDevice {
				return "", fmt.Errorf("kernel command line %q: Firecracker boots the root drive as %s and says so itself (root=%s); leave root= out", w, rootDevice, rootDevice)
			}
			continue
		}
		have[k] = true
		theirs = append(theirs, w)
	}
	var ours []string
	for _, p := range [][2]string{{"console", "ttyS0"}, {"reboot", "k"}, {"panic", "1"}, {"banger.poweroff", "reboot"}} {
		if !have[p[0]] {
			ours = append(ours, p[0]+"="+p[1])
		}
	}
	out := strings.Join(append(ours, theirs...), " ")
	if hasInitArgs {
		out += " -- " + tail
	}
	return out, nil
}

// vmPaths are a VM's files as Firecracker sees them: host paths, or paths
// inside the jail.
type vmPaths struct{ kernel, initrd, root, vsock string }

// machineSpec is the microVM for spec. Firecracker's own log is set up on its
// command line (--log-path), so there is no Logger here.
func machineSpec(s vmm.Spec, args string, p vmPaths) MachineSpec {
	ms := MachineSpec{
		VCPUs:      s.CPUs,
		MemMiB:     s.MemoryMiB,
		KernelPath: p.kernel,
		InitrdPath: p.initrd,
		BootArgs:   args,
		RootDrive:  DriveSpec{Path: p.root, ReadOnly: s.Root.ReadOnly},
		Vsock:      &VsockSpec{CID: s.VsockCID, UDSPath: p.vsock},
	}
	if s.Tap != "" {
		ms.Net = &NetSpec{HostDevName: s.Tap, GuestMAC: s.MAC}
	}
	return ms
}

// removeStale removes a socket at path that nothing listens on: Firecracker
// refuses to start over a leftover API socket, and Configure would do the same
// for the vsock one. A live socket is an error, as is any other file at path.
func removeStale(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, more than the %d a unix socket takes: use a shorter runtime directory", path, len(path), maxSocketPath)
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it, or choose another runtime directory", path)
	}
	if socketLive(path) {
		return fmt.Errorf("%s is in use by a running process (another firecracker for this VM?): stop it first", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// socketLive reports whether something accepts connections on path.
func socketLive(path string) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) == nil
}

// logTails is the end of Firecracker's log and of the console, formatted to
// follow an error.
func logTails(logPath, console string) string {
	var out string
	if s := tail(logPath, 8); s != "" {
		out += "; firecracker's log:\n" + s
	}
	// The console is the guest's text: neutralised before it reaches an error
	// message and so a terminal, once the logger has written what it holds.
	consolelog.Settle(console, time.Second)
	if s := tail(console, 8); s != "" {
		out += "\nconsole:\n" + termsafe.String(s)
	}
	return out
}

func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, 0)
	}
	b := make([]byte, max)
	n, _ := f.Read(b)
	return lastLines(string(b[:n]), lines)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
