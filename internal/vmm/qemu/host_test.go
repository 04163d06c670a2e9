package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	cpuinfoIntelVMX = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
cpu MHz		: 1200.000
flags		: fpu vme de pse tsc msr pae mce cx8 apic vmx constant_tsc
processor	: 1
model name	: Intel(R) Xeon(R) CPU E5-2680 v4 @ 9.99GHz
cpu MHz		: 3300.000
flags		: fpu vme
`
	cpuinfoAMDSVM = `processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13 64-Core Processor
cpu MHz		: 2449.998
flags		: fpu svm tsc
`
	// a VM that hides hardware virtualisation, as on this project's CI machines
	cpuinfoNested = `processor	: 0
model name	: AMD EPYC
cpu MHz		: 2596.140
flags		: fpu tsc constant_tsc hypervisor
`
	cpuinfoBare = `processor	: 0
model name	: Some CPU
flags		: fpu
`
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetectAccel(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		cpuinfo    string
		kvm        string
		want       Accel
		wantReason string
	}{
		{"no vmx/svm, /dev/kvm usable", cpuinfoNested, os.DevNull, AccelTCG, "neither vmx nor svm"},
		{"vmx, no /dev/kvm", cpuinfoIntelVMX, filepath.Join(dir, "missing-kvm"), AccelTCG, "no such file"},
		// /dev/null opens read-write but is no KVM: the API version ioctl fails
		{"svm, /dev/kvm is not KVM", cpuinfoAMDSVM, os.DevNull, AccelTCG, "does not answer as KVM"},
		{"unreadable cpuinfo", "", os.DevNull, AccelTCG, "cannot read CPU flags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cpuinfo := filepath.Join(dir, "missing-cpuinfo")
			if tt.cpuinfo != "" {
				cpuinfo = writeFile(t, t.TempDir(), "cpuinfo", tt.cpuinfo)
			}
			got := DetectAccel(HostPaths{CPUInfo: cpuinfo, KVM: tt.kvm})
			if got.Accel != tt.want || !strings.Contains(got.Reason, tt.wantReason) {
				t.Errorf("got %+v, want %s with a reason mentioning %q", got, tt.want, tt.wantReason)
			}
		})
	}
}

// TestDetectAccelHere checks the real host: without vmx/svm in /proc/cpuinfo
// the driver must choose TCG even though /dev/kvm may open (nested KVM that
// hangs ordinary kernels, as on the machines these tests run on).
func TestDetectAccelHere(t *testing.T) {
	flags, err := cpuFlags("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no CPU flags here: %v", err)
	}
	got := DetectAccel(HostPaths{})
	t.Logf("accelerator here: %s (%s)", got.Accel, got.Reason)
	if !flags["vmx"] && !flags["svm"] && got.Accel != AccelTCG {
		t.Errorf("no vmx/svm here, got %s; want tcg", got.Accel)
	}
}

func TestHostTSCkHz(t *testing.T) {
	tests := []struct {
		name, sysfs, cpuinfo string
		want                 int
		wantSource           string
	}{
		{"sysfs wins", "2095078\n", cpuinfoIntelVMX, 2095078, "tsc_freq_khz"},
		{"intel model name over a scaled cpu MHz", "", cpuinfoIntelVMX, 2400000, "model name"},
		{"amd: cpu MHz", "", cpuinfoAMDSVM, 2449998, "cpu MHz"},
		{"vm: cpu MHz", "", cpuinfoNested, 2596140, "cpu MHz"},
		{"garbage sysfs falls through", "unknown", cpuinfoNested, 2596140, "cpu MHz"},
		{"nothing usable", "", cpuinfoBare, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := HostPaths{CPUInfo: writeFile(t, dir, "cpuinfo", tt.cpuinfo), TSCFreq: filepath.Join(dir, "none")}
			if tt.sysfs != "" {
				h.TSCFreq = writeFile(t, dir, "tsc_freq_khz", tt.sysfs)
			}
			got, src, err := HostTSCkHz(h)
			if tt.want == 0 {
				if err == nil {
					t.Fatalf("got %d from %s, want an error", got, src)
				}
				return
			}
			if err != nil || got != tt.want || !strings.Contains(src, tt.wantSource) {
				t.Errorf("got %d from %q (%v), want %d from %s", got, src, err, tt.want, tt.wantSource)
			}
		})
	}
}

func TestModelNameKHz(t *testing.T) {
	tests := map[string]int{
		"Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz": 1900000,
		"Intel(R) Pentium(R) 4 CPU @ 2800MHz":      2800000,
		"AMD Ryzen 9 5950X 16-Core Processor":      0,
		"Weird @ fastGHz":                          0,
	}
	for in, want := range tests {
		if got := modelNameKHz(in); got != want {
			t.Errorf("modelNameKHz(%q) = %d, want %d", in, got, want)
		}
	}
}
