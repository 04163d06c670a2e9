package kernel

import (
	"fmt"
	"strings"
)

// Status is how a kernel provides one feature.
type Status string

// The statuses, best first.
const (
	StatusOK      Status = "ok"      // built in (=y)
	StatusModule  Status = "module"  // =m: loadable, so needs an initramfs that carries it
	StatusMissing Status = "missing" // not set: the kernel cannot have it
)

// Check is one feature a VMM's guest needs and what the config says of it.
type Check struct {
	Feature string   `json:"feature"` // "virtio-blk"
	Status  Status   `json:"status"`
	Symbols []string `json:"symbols"` // what was looked at, with values: "CONFIG_VIRTIO_BLK=m"
	// Modules are the module names an initramfs must load for the feature
	// (Status module); empty otherwise.
	Modules []string `json:"modules,omitempty"`
	Detail  string   `json:"detail,omitempty"` // what to change, when not ok
}

// Report is whether a kernel can boot under one VMM.
type Report struct {
	VMM    string  `json:"vmm"`   // "firecracker" or "qemu"
	Ready  bool    `json:"ready"` // every check passes as this VMM needs
	Checks []Check `json:"checks"`
}

// Problems returns the checks that keep the kernel from booting.
func (r Report) Problems() []Check {
	var out []Check
	for _, c := range r.Checks {
		if r.failed(c) {
			out = append(out, c)
		}
	}
	return out
}

func (r Report) failed(c Check) bool {
	if r.VMM == "qemu" {
		return c.Status == StatusMissing
	}
	return c.Status != StatusOK
}

// String is the report for a person: one line, then a line per problem.
func (r Report) String() string {
	var b strings.Builder
	if r.Ready {
		fmt.Fprintf(&b, "%s: can boot this kernel", r.VMM)
	} else {
		fmt.Fprintf(&b, "%s: cannot boot this kernel", r.VMM)
	}
	for _, c := range r.Problems() {
		fmt.Fprintf(&b, "\n  %s: %s (%s)", c.Feature, c.Status, strings.Join(c.Symbols, ", "))
		if c.Detail != "" {
			fmt.Fprintf(&b, ": %s", c.Detail)
		}
	}
	if r.VMM == "qemu" {
		if mods := r.InitramfsModules(); len(mods) > 0 {
			fmt.Fprintf(&b, "\n  modules banger's initramfs loads: %s", strings.Join(mods, ", "))
		}
	}
	return b.String()
}

// value is a symbol's value in cfg, "n" when not set.
func value(cfg map[string]string, sym string) string {
	if v, ok := cfg[sym]; ok && v != "" {
		return v
	}
	return "n"
}

// requirement is a feature and the symbols that provide it: every symbol
// of one alternative must be set; the first alternative that is fully
// built in wins.
type requirement struct {
	feature      string
	alternatives [][]string
	// builtIn: the feature must be =y even where modules can be loaded
	// (early console, devtmpfs, initramfs support).
	builtIn bool
	detail  string // how to get it, when missing
}

// moduleOf names the module a config symbol builds, for the QEMU report.
func moduleOf(sym string) string {
	switch sym {
	case "CONFIG_VIRTIO":
		return "virtio"
	case "CONFIG_VIRTIO_PCI":
		return "virtio_pci"
	case "CONFIG_VIRTIO_MMIO":
		return "virtio_mmio"
	case "CONFIG_VIRTIO_BLK":
		return "virtio_blk"
	case "CONFIG_VIRTIO_NET":
		return "virtio_net"
	case "CONFIG_VIRTIO_CONSOLE":
		return "virtio_console"
	case "CONFIG_VSOCKETS":
		return "vsock"
	case "CONFIG_VIRTIO_VSOCKETS":
		return "vmw_vsock_virtio_transport"
	case "CONFIG_EXT4_FS":
		return "ext4"
	case "CONFIG_OVERLAY_FS":
		return "overlay"
	}
	return ""
}

func evaluate(cfg map[string]string, r requirement) Check {
	c := Check{Feature: r.feature, Status: StatusMissing}
	seen := map[string]bool{}
	for _, alt := range r.alternatives {
		st := StatusOK
		var mods []string
		for _, sym := range alt {
			if !seen[sym] {
				seen[sym] = true
				c.Symbols = append(c.Symbols, sym+"="+value(cfg, sym))
			}
			switch value(cfg, sym) {
			case "y":
			case "m":
				if st == StatusOK {
					st = StatusModule
				}
				if m := moduleOf(sym); m != "" {
					mods = append(mods, m)
				}
			default:
				st = StatusMissing
			}
		}
		if rank(st) < rank(c.Status) {
			c.Status, c.Modules = st, mods
		}
		if st == StatusOK {
			break
		}
	}
	if c.Status == StatusModule && r.builtIn {
		c.Status, c.Modules = StatusMissing, nil
	}
	switch c.Status {
	case StatusOK:
		c.Modules = nil
	case StatusModule:
		c.Detail = "a module: the guest needs an initramfs that loads " + strings.Join(c.Modules, ", ")
	case StatusMissing:
		c.Detail = r.detail
	}
	return c
}

func rank(s Status) int {
	switch s {
	case StatusOK:
		return 0
	case StatusModule:
		return 1
	}
	return 2
}

// firecrackerNeeds is what a guest under Firecracker needs built in:
// Firecracker boots without an initramfs of banger's, so nothing can come
// from a module.
func firecrackerNeeds() []requirement {
	return []requirement{
		{
			feature: "virtio-mmio devices",
			alternatives: [][]string{
				{"CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"},
				{"CONFIG_VIRTIO_MMIO", "CONFIG_ACPI"},
			},
			detail: "Firecracker's devices are virtio-mmio, found from the command line (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y) or from ACPI (CONFIG_ACPI=y, Firecracker 1.8+), with CONFIG_VIRTIO_MMIO=y",
		},
		{feature: "virtio-blk", alternatives: [][]string{{"CONFIG_VIRTIO_BLK"}}, detail: "set CONFIG_VIRTIO_BLK=y for the root disk"},
		{feature: "virtio-net", alternatives: [][]string{{"CONFIG_VIRTIO_NET"}}, detail: "set CONFIG_VIRTIO_NET=y for the network"},
		{feature: "vsock", alternatives: [][]string{{"CONFIG_VSOCKETS", "CONFIG_VIRTIO_VSOCKETS"}}, detail: "set CONFIG_VSOCKETS=y and CONFIG_VIRTIO_VSOCKETS=y for the agent's control channel"},
		{feature: "serial console", alternatives: [][]string{{"CONFIG_SERIAL_8250_CONSOLE"}}, detail: "set CONFIG_SERIAL_8250=y and CONFIG_SERIAL_8250_CONSOLE=y for the console log"},
		{feature: "ext4", alternatives: [][]string{{"CONFIG_EXT4_FS"}}, detail: "set CONFIG_EXT4_FS=y: banger's root filesystems are ext4"},
	}
}

// CheckFirecracker says whether a kernel with config cfg can boot under
// Firecracker, listing each feature that is missing or only a module.
func CheckFirecracker(cfg map[string]string) Report {
	return report("firecracker", cfg, firecrackerNeeds())
}

// qemuNeeds is what a guest under banger's QEMU driver needs, built in or
// as a module that banger's initramfs loads; a few things must be built in.
func qemuNeeds() []requirement {
	return []requirement{
		{feature: "initramfs support", alternatives: [][]string{{"CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP"}}, builtIn: true, detail: "set CONFIG_BLK_DEV_INITRD=y and CONFIG_RD_GZIP=y: banger's initramfs is a gzip-compressed cpio"},
		{feature: "devtmpfs", alternatives: [][]string{{"CONFIG_DEVTMPFS"}}, builtIn: true, detail: "set CONFIG_DEVTMPFS=y"},
		{feature: "serial console", alternatives: [][]string{{"CONFIG_SERIAL_8250_CONSOLE"}}, builtIn: true, detail: "set CONFIG_SERIAL_8250=y and CONFIG_SERIAL_8250_CONSOLE=y for the console log"},
		{
			feature:      "virtio transport",
			alternatives: [][]string{{"CONFIG_VIRTIO_MMIO"}, {"CONFIG_VIRTIO_PCI"}},
			detail:       "set CONFIG_VIRTIO_MMIO (microvm) or CONFIG_VIRTIO_PCI (q35)",
		},
		{feature: "virtio-blk", alternatives: [][]string{{"CONFIG_VIRTIO_BLK"}}, detail: "set CONFIG_VIRTIO_BLK for the root disk"},
		{feature: "virtio-net", alternatives: [][]string{{"CONFIG_VIRTIO_NET"}}, detail: "set CONFIG_VIRTIO_NET for the network"},
		{feature: "virtio-serial", alternatives: [][]string{{"CONFIG_VIRTIO_CONSOLE"}}, detail: "set CONFIG_VIRTIO_CONSOLE for the agent's port"},
		{feature: "vsock", alternatives: [][]string{{"CONFIG_VSOCKETS", "CONFIG_VIRTIO_VSOCKETS"}}, detail: "set CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS"},
		{feature: "ext4", alternatives: [][]string{{"CONFIG_EXT4_FS"}}, detail: "set CONFIG_EXT4_FS: banger's root filesystems are ext4"},
		{feature: "overlayfs", alternatives: [][]string{{"CONFIG_OVERLAY_FS"}}, detail: "set CONFIG_OVERLAY_FS"},
	}
}

// CheckQEMU says whether a kernel with config cfg can boot under banger's
// QEMU driver with banger's initramfs: each feature built in, a module the
// initramfs must carry (Check.Modules), or missing. Modules are fine here.
func CheckQEMU(cfg map[string]string) Report {
	return report("qemu", cfg, qemuNeeds())
}

// InitramfsModules returns the modules a QEMU guest of this kernel needs
// from the initramfs: the union of the QEMU report's Modules, in order.
func (r Report) InitramfsModules() []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range r.Checks {
		for _, m := range c.Modules {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}

func report(vmm string, cfg map[string]string, needs []requirement) Report {
	r := Report{VMM: vmm, Ready: true}
	for _, n := range needs {
		c := evaluate(cfg, n)
		if vmm == "firecracker" && c.Status == StatusModule {
			c.Detail = "a module (=m): Firecracker guests boot without banger's initramfs, so build it in (=y)"
		}
		r.Checks = append(r.Checks, c)
		if r.failed(c) {
			r.Ready = false
		}
	}
	return r
}

// CheckFirecrackerKernel is CheckFirecracker for an imported kernel: it
// adds the image format (Firecracker on x86-64 loads only an ELF vmlinux)
// and says so when no config is known.
func CheckFirecrackerKernel(k Kernel) (Report, error) {
	cfg, err := k.Config()
	if err != nil {
		return Report{}, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	r := Report{VMM: "firecracker", Ready: true}
	if cfg != nil {
		r = CheckFirecracker(cfg)
	} else {
		r.Ready = false
		r.Checks = append(r.Checks, Check{Feature: "kernel config", Status: StatusMissing,
			Detail: "no config found (not embedded, no config-RELEASE beside the kernel): import it again with its config to check"})
	}
	format := Check{Feature: "image format", Status: StatusOK, Symbols: []string{string(k.Info.Format)}}
	if k.Info.Format != FormatELF {
		format.Status = StatusMissing
		format.Detail = "Firecracker on x86-64 loads an uncompressed ELF vmlinux, not a bzImage: extract it (scripts/extract-vmlinux) and import that"
		r.Ready = false
	}
	r.Checks = append([]Check{format}, r.Checks...)
	return r, nil
}
