package kernel

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/initramfs"
)

// fcFull is a config with everything Firecracker needs built in, with
// virtio-mmio devices from the command line.
func fcFull() map[string]string {
	return map[string]string{
		"CONFIG_VIRTIO_MMIO": "y", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": "y",
		"CONFIG_VIRTIO_BLK": "y", "CONFIG_VIRTIO_NET": "y",
		"CONFIG_VSOCKETS": "y", "CONFIG_VIRTIO_VSOCKETS": "y",
		"CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_EXT4_FS": "y",
	}
}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// problems renders a report's problems as "feature=status" for comparison.
func problems(r Report) []string {
	var out []string
	for _, c := range r.Problems() {
		out = append(out, c.Feature+"="+string(c.Status))
	}
	return out
}

func TestCheckFirecracker(t *testing.T) {
	tests := []struct {
		name string
		cfg  map[string]string
		want []string // problems; nil means ready
	}{
		{"all built in, cmdline devices", fcFull(), nil},
		{"ACPI instead of cmdline devices", with(fcFull(), "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", "", "CONFIG_ACPI", "y"), nil},
		{"virtio-mmio without a way to find devices", with(fcFull(), "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", ""), []string{"virtio-mmio devices=missing"}},
		{"virtio-mmio as a module", with(fcFull(), "CONFIG_VIRTIO_MMIO", "m", "CONFIG_ACPI", "y"), []string{"virtio-mmio devices=module"}},
		{"virtio-blk as a module", with(fcFull(), "CONFIG_VIRTIO_BLK", "m"), []string{"virtio-blk=module"}},
		{"vsock core without the virtio transport", with(fcFull(), "CONFIG_VIRTIO_VSOCKETS", ""), []string{"vsock=missing"}},
		{"no serial console, ext4 a module", with(fcFull(), "CONFIG_SERIAL_8250_CONSOLE", "", "CONFIG_EXT4_FS", "m"), []string{"serial console=missing", "ext4=module"}},
		{"empty config", map[string]string{}, []string{"virtio-mmio devices=missing", "virtio-blk=missing", "virtio-net=missing", "vsock=missing", "serial console=missing", "ext4=missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := CheckFirecracker(tt.cfg)
			if got := problems(r); !slices.Equal(got, tt.want) {
				t.Errorf("problems %v, want %v\n%s", got, tt.want, r)
			}
			if r.Ready != (len(tt.want) == 0) {
				t.Errorf("Ready %v with problems %v", r.Ready, tt.want)
			}
		})
	}
	r := CheckFirecracker(with(fcFull(), "CONFIG_VIRTIO_BLK", "m"))
	if s := r.String(); !strings.Contains(s, "virtio-blk: module (CONFIG_VIRTIO_BLK=m)") {
		t.Errorf("report text %q does not say virtio-blk is a module", s)
	}
}

func TestCheckQEMU(t *testing.T) {
	base := with(fcFull(), "CONFIG_BLK_DEV_INITRD", "y", "CONFIG_RD_GZIP", "y", "CONFIG_DEVTMPFS", "y",
		"CONFIG_VIRTIO_CONSOLE", "y", "CONFIG_OVERLAY_FS", "y")
	tests := []struct {
		name    string
		cfg     map[string]string
		want    []string
		modules []string
	}{
		{"all built in", base, nil, nil},
		{"modules are fine", with(base, "CONFIG_VIRTIO_BLK", "m", "CONFIG_VSOCKETS", "m", "CONFIG_VIRTIO_VSOCKETS", "m", "CONFIG_OVERLAY_FS", "m"), nil, []string{"virtio_blk", "vsock", "vmw_vsock_virtio_transport", "overlay"}},
		{"PCI transport only", with(base, "CONFIG_VIRTIO_MMIO", "", "CONFIG_VIRTIO_PCI", "m"), nil, []string{"virtio_pci"}},
		{"the serial console cannot be a module", with(base, "CONFIG_SERIAL_8250_CONSOLE", "m"), []string{"serial console=missing"}, nil},
		{"no gzip initramfs", with(base, "CONFIG_RD_GZIP", ""), []string{"initramfs support=missing"}, nil},
		{"no virtio-net", with(base, "CONFIG_VIRTIO_NET", ""), []string{"virtio-net=missing"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := CheckQEMU(tt.cfg)
			if got := problems(r); !slices.Equal(got, tt.want) {
				t.Errorf("problems %v, want %v\n%s", got, tt.want, r)
			}
			if got := r.InitramfsModules(); !slices.Equal(got, tt.modules) {
				t.Errorf("initramfs modules %v, want %v", got, tt.modules)
			}
		})
	}
}

// TestReadinessHostConfig runs both checks on this machine's /boot config:
// the Debian cloud kernel builds virtio and vsock as modules and lacks
// virtio-mmio command-line devices, so Firecracker cannot boot it, while
// QEMU can with banger's initramfs.
func TestReadinessHostConfig(t *testing.T) {
	m, _ := filepath.Glob("/boot/config-*")
	if len(m) == 0 {
		t.Skip("no /boot/config-* on this machine")
	}
	for _, p := range m {
		cfg, err := ReadConfigFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fc, q := CheckFirecracker(cfg), CheckQEMU(cfg)
		t.Logf("%s:\n%s\n%s", p, fc, q)
		// Each verdict must follow from the symbols the check shows.
		for _, c := range append(fc.Checks, q.Checks...) {
			if len(c.Symbols) == 0 {
				t.Errorf("%s: check %q shows no symbols", p, c.Feature)
			}
		}
		if strings.Contains(p, "-cloud-amd64") {
			if fc.Ready {
				t.Errorf("%s: Firecracker ready, want not (virtio is modular on Debian cloud kernels)", p)
			}
			for _, want := range []string{"virtio-mmio devices=module", "virtio-blk=module", "virtio-net=module", "vsock=module"} {
				if !slices.Contains(problems(fc), want) {
					t.Errorf("%s: Firecracker problems %v lack %s", p, problems(fc), want)
				}
			}
			if slices.Contains(problems(fc), "ext4=missing") || slices.Contains(problems(fc), "serial console=missing") {
				t.Errorf("%s: ext4 and the serial console are built in, got problems %v", p, problems(fc))
			}
			if !q.Ready {
				t.Errorf("%s: QEMU not ready: %s", p, q)
			}
			mods := q.InitramfsModules()
			for _, m := range mods {
				if !slices.Contains(initramfs.DefaultModules(), m) {
					t.Errorf("%s: QEMU needs module %s, which the default initramfs does not carry", p, m)
				}
			}
			if !slices.Contains(mods, "virtio_blk") {
				t.Errorf("%s: initramfs modules %v lack virtio_blk", p, mods)
			}
		}
	}
}
