package firecracker

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// HostKVM are the host files CheckKVM reads. The zero value means the real
// ones; tests point them at crafted files.
type HostKVM struct {
	CPUInfo string // default /proc/cpuinfo
	Device  string // default /dev/kvm
}

// kvmGetAPIVersion is KVM_GET_API_VERSION (_IO(0xAE, 0x00)); every KVM answers 12.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// CheckKVM says why Firecracker cannot run here (nil when it can): it needs
// KVM, with no emulation to fall back on. That takes the CPU's hardware
// virtualisation flag (vmx or svm) and a /dev/kvm that opens read-write and
// answers KVM_GET_API_VERSION. The flag is required even when /dev/kvm
// opens: a nested /dev/kvm without it (a VM that hides vmx/svm from its
// guests) opens fine and then hangs ordinary kernels.
func CheckKVM(h HostKVM) error {
	if h.CPUInfo == "" {
		h.CPUInfo = "/proc/cpuinfo"
	}
	if h.Device == "" {
		h.Device = "/dev/kvm"
	}
	ok, err := hasVirtFlag(h.CPUInfo)
	if err != nil {
		return fmt.Errorf("firecracker needs KVM: cannot read the CPU's flags: %w", err)
	}
	if !ok {
		return fmt.Errorf("firecracker needs KVM, and the CPU shows no hardware virtualisation (neither vmx nor svm in %s): enable VT-x/AMD-V in the firmware, or nested virtualisation for a VM; or use the qemu driver", h.CPUInfo)
	}
	fd, err := unix.Open(h.Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("firecracker needs KVM: %s: %w: load kvm_intel or kvm_amd and give banger's owner read-write access to it (the kvm group)", h.Device, err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil || v != kvmAPIVersion {
		return fmt.Errorf("firecracker needs KVM: %s does not answer as KVM (API version %d, %v)", h.Device, v, err)
	}
	return nil
}

// hasVirtFlag reports whether the first processor's flags include vmx or svm.
func hasVirtFlag(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(v) {
			if fl == "vmx" || fl == "svm" {
				return true, nil
			}
		}
		return false, nil
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, errors.New("no flags line in " + path)
}
