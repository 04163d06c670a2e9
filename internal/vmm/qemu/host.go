package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Accel is QEMU's accelerator.
type Accel string

// Accelerators. AccelAuto picks KVM when the host can run it and TCG otherwise.
const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg" // software emulation: slow, but runs anywhere
)

// HostPaths are the host files the driver probes. The zero value means the real
// ones; tests point them at crafted files.
type HostPaths struct {
	CPUInfo string // default /proc/cpuinfo
	KVM     string // default /dev/kvm
	// TSCFreq is the kernel's own TSC frequency in kHz, where it exposes one
	// (default /sys/devices/system/cpu/cpu0/tsc_freq_khz).
	TSCFreq string
}

func (h HostPaths) withDefaults() HostPaths {
	if h.CPUInfo == "" {
		h.CPUInfo = "/proc/cpuinfo"
	}
	if h.KVM == "" {
		h.KVM = "/dev/kvm"
	}
	if h.TSCFreq == "" {
		h.TSCFreq = "/sys/devices/system/cpu/cpu0/tsc_freq_khz"
	}
	return h
}

// AccelChoice is the accelerator the driver uses and why: `banger doctor` shows
// both, since "it works but slowly" needs a reason the user can act on.
type AccelChoice struct {
	Accel  Accel  `json:"accel"`
	Reason string `json:"reason"`
}

// kvmGetAPIVersion is KVM_GET_API_VERSION (_IO(0xAE, 0x00)); every KVM answers 12.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// DetectAccel decides between KVM and TCG. KVM needs both the CPU's hardware
// virtualisation flag (vmx or svm in /proc/cpuinfo) and a /dev/kvm that opens
// read-write and answers KVM_GET_API_VERSION. The flag is required even when
// /dev/kvm opens: a nested /dev/kvm without it (a VM inside a VM that hides
// vmx/svm) opens fine and then hangs ordinary kernels.
func DetectAccel(h HostPaths) AccelChoice {
	h = h.withDefaults()
	flags, err := cpuFlags(h.CPUInfo)
	if err != nil {
		return AccelChoice{AccelTCG, fmt.Sprintf("cannot read CPU flags (%v): using software emulation (TCG)", err)}
	}
	if !flags["vmx"] && !flags["svm"] {
		return AccelChoice{AccelTCG, "the CPU shows no hardware virtualisation (neither vmx nor svm in " + h.CPUInfo +
			"): using software emulation (TCG); enable VT-x/AMD-V in the firmware, or nested virtualisation for a VM, to use KVM"}
	}
	fd, err := unix.Open(h.KVM, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return AccelChoice{AccelTCG, fmt.Sprintf("%s: %v: using software emulation (TCG); load kvm_intel or kvm_amd and add the user to the kvm group to use KVM", h.KVM, err)}
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil || v != kvmAPIVersion {
		return AccelChoice{AccelTCG, fmt.Sprintf("%s does not answer as KVM (API version %d, %v): using software emulation (TCG)", h.KVM, v, err)}
	}
	return AccelChoice{AccelKVM, "hardware virtualisation (KVM): the CPU has vmx/svm and " + h.KVM + " is usable"}
}

// cpuFlags returns the first processor's flags.
func cpuFlags(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			m := map[string]bool{}
			for _, fl := range strings.Fields(v) {
				m[fl] = true
			}
			return m, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no flags line")
}

// HostTSCkHz is the host's TSC frequency in kHz, and where it came from.
//
// Why it matters: under TCG the guest's TSC ticks at the host's rate, but a
// guest kernel calibrating it against the emulated PIT/HPET gets nonsense from
// a slow emulator and hangs in most boots on microvm. tsc_early_khz= hands it
// the right value and tsc=reliable stops the watchdog from throwing it out.
//
// The sources, best first:
//  1. /sys/devices/system/cpu/cpu0/tsc_freq_khz: the kernel's own value, where
//     the kernel exposes it;
//  2. the "@ 2.60GHz" of an Intel model name: the nominal frequency, which is
//     the TSC's on every CPU with an invariant TSC (Intel's brand string names
//     it for that reason);
//  3. "cpu MHz" of the first processor: in a VM (where there is no frequency
//     scaling) the kernel prints its TSC frequency there; on bare metal with
//     scaling it can be the current clock instead, which is why it comes last.
//
// An error means none was usable: boot without the flags rather than with a
// made-up value.
func HostTSCkHz(h HostPaths) (khz int, source string, err error) {
	h = h.withDefaults()
	if b, err := os.ReadFile(h.TSCFreq); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			return v, h.TSCFreq, nil
		}
	}
	f, err := os.Open(h.CPUInfo)
	if err != nil {
		return 0, "", fmt.Errorf("host TSC frequency: %w", err)
	}
	defer f.Close()
	var modelKHz, mhzKHz int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case k == "processor" && v != "0":
			// the first processor's lines are enough
			return pickTSC(modelKHz, mhzKHz, h.CPUInfo)
		case k == "model name" && modelKHz == 0:
			modelKHz = modelNameKHz(v)
		case k == "cpu MHz" && mhzKHz == 0:
			if mhz, err := strconv.ParseFloat(v, 64); err == nil && mhz > 0 {
				mhzKHz = int(mhz*1000 + 0.5)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", fmt.Errorf("host TSC frequency: %s: %w", h.CPUInfo, err)
	}
	return pickTSC(modelKHz, mhzKHz, h.CPUInfo)
}

func pickTSC(modelKHz, mhzKHz int, path string) (int, string, error) {
	switch {
	case modelKHz > 0:
		return modelKHz, path + " model name", nil
	case mhzKHz > 0:
		return mhzKHz, path + " cpu MHz", nil
	}
	return 0, "", fmt.Errorf("host TSC frequency: neither tsc_freq_khz, a model name with \"@ x.xxGHz\" nor \"cpu MHz\" in %s", path)
}

// modelNameKHz reads "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz" as 2400000.
func modelNameKHz(name string) int {
	_, after, ok := strings.Cut(name, "@")
	if !ok {
		return 0
	}
	s := strings.TrimSpace(after)
	mult := 0.0
	switch {
	case strings.HasSuffix(s, "GHz"):
		s, mult = strings.TrimSuffix(s, "GHz"), 1e6
	case strings.HasSuffix(s, "MHz"):
		s, mult = strings.TrimSuffix(s, "MHz"), 1e3
	default:
		return 0
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v <= 0 {
		return 0
	}
	return int(v*mult + 0.5)
}
