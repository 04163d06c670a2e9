package qemu

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
)

func TestAvailable(t *testing.T) {
	ctx := context.Background()
	type testCase struct {
		name string
		o    Options
		want string // "" for available
	}
	tests := []testCase{
		{"missing binary", Options{Binary: "/nonexistent/qemu-system-x86_64"}, "not found"},
		// echo runs but lists no machine
		{"binary without the machine", Options{Binary: "/bin/echo"}, "has no microvm machine"},
	}
	if _, err := exec.LookPath(DefaultBinary); err == nil {
		tests = append(tests,
			testCase{"installed qemu, microvm", Options{}, ""},
			testCase{"installed qemu, q35", Options{Machine: MachineQ35}, ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(tt.o).Available(ctx)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Available: %v", err)
				}
				return
			}
			if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Available: %v, want ErrUnavailable mentioning %q", err, tt.want)
			}
		})
	}
}

func TestAccelConfigured(t *testing.T) {
	for _, a := range []Accel{AccelKVM, AccelTCG} {
		if got := New(Options{Accel: a}).Accel(); got.Accel != a || !strings.Contains(got.Reason, "configured") {
			t.Errorf("Accel with %s configured: got %+v", a, got)
		}
	}
	// auto probes the (crafted) host
	dir := t.TempDir()
	h := HostPaths{CPUInfo: writeFile(t, dir, "cpuinfo", cpuinfoNested), KVM: filepath.Join(dir, "kvm")}
	if got := New(Options{Host: h}).Accel(); got.Accel != AccelTCG {
		t.Errorf("Accel auto on a host without vmx/svm: got %+v, want tcg", got)
	}
}

// TestHandleOfAnotherDriver: a Handle is only this driver's to act on.
func TestHandleOfAnotherDriver(t *testing.T) {
	d := New(Options{})
	h := vmm.Handle{Driver: "firecracker", PID: 1, PIDStart: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.State(ctx, h); err == nil {
		t.Error("State accepted a firecracker handle")
	}
	if err := d.Kill(ctx, h); err == nil {
		t.Error("Kill accepted a firecracker handle")
	}
	if err := d.Stop(ctx, h, time.Second); err == nil {
		t.Error("Stop accepted a firecracker handle")
	}
	if _, err := d.DialAgent(ctx, h); err == nil {
		t.Error("DialAgent accepted a firecracker handle")
	}
}

// TestZeroHandle: a handle naming no process is an exited VMM, and ending it
// is a no-op.
func TestZeroHandle(t *testing.T) {
	d := New(Options{})
	ctx := context.Background()
	if st, err := d.State(ctx, vmm.Handle{}); err != nil || st != vmm.StateExited {
		t.Errorf("State(zero handle) = %q, %v; want exited", st, err)
	}
	if err := d.Stop(ctx, vmm.Handle{}, time.Second); err != nil {
		t.Errorf("Stop(zero handle): %v", err)
	}
	if err := d.Kill(ctx, vmm.Handle{}); err != nil {
		t.Errorf("Kill(zero handle): %v", err)
	}
}
