package qemu

import (
	"fmt"
	"strconv"
	"strings"

	"banger/internal/agent/proto"
	"banger/internal/vmm"
)

// Machine is the QEMU machine type.
type Machine string

// Machines.
const (
	// MachineMicroVM is QEMU's minimal machine: no PCI, no firmware to speak of,
	// virtio-mmio devices described by ACPI. It boots fastest, and an
	// uncompressed vmlinux (PVH entry) faster still.
	MachineMicroVM Machine = "microvm"
	// MachineQ35 is a full PC (PCIe, SeaBIOS): slower to boot, but every
	// kernel and every device model runs on it.
	MachineQ35 Machine = "q35"
)

// Fixed descriptors of the pre-opened listening sockets in QEMU (ExtraFiles).
const (
	qmpFD     = 3
	agentFD   = 4
	consoleFD = 5 // the write end of the console logger's pipe
)

// launch is one QEMU invocation, everything decided.
type launch struct {
	machine  Machine
	accel    Accel
	spec     vmm.Spec
	cmdline  string // the final kernel command line
	directIO bool   // the root disk accepts O_DIRECT: cache=none,aio=native
}

// args is QEMU's argument list. Values inside option strings go through
// optValue, since QEMU's option syntax gives commas a meaning.
func (l launch) args() []string {
	s := l.spec
	dev := func(microvm, pci string) string {
		if l.machine == MachineQ35 {
			return pci
		}
		return microvm
	}
	machine := "q35"
	if l.machine != MachineQ35 {
		// acpi=on: the Debian kernel finds virtio-mmio devices only through ACPI
		// (it lacks VIRTIO_MMIO_CMDLINE_DEVICES), and ACPI is how a guest powers
		// the machine off. x-option-roms=off skips the ROMs microvm has no use for.
		machine = "microvm,acpi=on,x-option-roms=off,isa-serial=on,rtc=on"
	}
	cpu := "max" // everything TCG can emulate
	if l.accel == AccelKVM {
		cpu = "host"
	}
	var a []string
	if s.Name != "" {
		a = append(a, "-name", "guest="+optValue(s.Name))
	}
	a = append(a,
		"-machine", machine,
		"-accel", string(l.accel),
		"-cpu", cpu,
		"-smp", strconv.Itoa(s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB),
		// no default devices, no config files, no display; a guest reboot ends
		// QEMU, as it ends Firecracker: the VMService decides about restarts
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-msg", "timestamp=on",
		"-kernel", s.Kernel, // -kernel, -initrd and -append are taken verbatim
	)
	if s.Initrd != "" {
		a = append(a, "-initrd", s.Initrd)
	}
	a = append(a, "-append", l.cmdline)

	a = append(a,
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", qmpFD),
		"-mon", "chardev=qmp,mode=control",
		// The serial console goes into the logger's pipe (consolelog), which
		// keeps the log under its cap; never to a file QEMU appends to.
		"-chardev", fmt.Sprintf("file,id=console,path=/dev/fd/%d", consoleFD),
		"-serial", "chardev:console",
	)

	drive := "id=root,if=none,file=" + optValue(s.Root.Path) + ",format=" + s.Root.Format + ",discard=unmap"
	if l.directIO {
		drive += ",cache=none,aio=native"
	} else {
		drive += ",cache=writeback,aio=threads"
	}
	if s.Root.ReadOnly {
		drive += ",readonly=on"
	}
	a = append(a, "-drive", drive, "-device", dev("virtio-blk-device", "virtio-blk-pci")+",drive=root")

	if s.Tap != "" {
		a = append(a,
			"-netdev", "tap,id=net0,ifname="+optValue(s.Tap)+",script=no,downscript=no",
			"-device", dev("virtio-net-device", "virtio-net-pci")+",netdev=net0"+macOpt(s.MAC))
	}

	a = append(a,
		"-device", dev("virtio-serial-device", "virtio-serial-pci")+",id=vser0",
		"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", agentFD),
		"-device", "virtserialport,bus=vser0.0,chardev=agent,name="+proto.SerialPortName,
	)
	return a
}

func macOpt(mac string) string {
	if mac == "" {
		return ""
	}
	return ",mac=" + mac
}

// optValue escapes a value inside a QEMU option string, where a comma separates
// options and ",," stands for a literal comma.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// kernelCmdline is the guest's command line: the driver's parameters, then the
// spec's. A parameter of the driver's that the spec sets already is left out, so
// the VMService can override any of them. The driver's go first so that they
// stay before a "--", after which the kernel hands words to init as arguments.
//
//	console=ttyS0            the serial port QEMU writes to ConsoleLog
//	reboot=t                 reboot by triple fault: immediate on any machine,
//	                         and with -no-reboot QEMU then exits
//	panic=-1                 a panic reboots at once, so QEMU exits instead of
//	                         leaving a dead guest running
//	tsc_early_khz=N          under TCG only: the host's TSC rate (see HostTSCkHz)
//	tsc=reliable             under TCG only: keep the TSC as clocksource
//	root=/dev/vda            the virtio-blk root disk, unless the spec names one
func kernelCmdline(spec string, accel Accel, tscKHz int) string {
	head, tail, hasInitArgs := strings.Cut(spec, " -- ")
	if !hasInitArgs && strings.HasPrefix(spec, "-- ") {
		head, tail, hasInitArgs = "", strings.TrimPrefix(spec, "-- "), true
	}
	have := map[string]bool{}
	for _, w := range strings.Fields(head) {
		k, _, _ := strings.Cut(w, "=")
		have[k] = true
	}
	var ours []string
	add := func(k, v string) {
		if !have[k] {
			ours = append(ours, k+"="+v)
		}
	}
	add("console", "ttyS0")
	add("reboot", "t")
	add("panic", "-1")
	if accel == AccelTCG && tscKHz > 0 {
		add("tsc_early_khz", strconv.Itoa(tscKHz))
		add("tsc", "reliable")
	}
	add("root", "/dev/vda")
	out := strings.Join(append(ours, strings.Fields(head)...), " ")
	if hasInitArgs {
		out += " -- " + tail
	}
	return out
}
