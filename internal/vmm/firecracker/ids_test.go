package firecracker_test

import (
	"strings"
	"testing"

	"banger/internal/vmm/firecracker"
)

func TestDeviceID(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"rootfs", "rootfs"},
		{"root-fs", "root_fs"},
		{"eth0", "eth0"},
		{"data disk.1", "data_disk_1"},
		{"é", "__"},
		{"", "dev"},
	} {
		got := firecracker.DeviceID(tt.in)
		if got != tt.want {
			t.Errorf("DeviceID(%q): got %q, want %q", tt.in, got, tt.want)
		}
		if err := firecracker.ValidateDeviceID(got); err != nil {
			t.Errorf("DeviceID(%q) = %q is not valid: %v", tt.in, got, err)
		}
	}
	for _, bad := range []string{"", "root-fs", "a/b", "a b", "é"} {
		if firecracker.ValidateDeviceID(bad) == nil {
			t.Errorf("ValidateDeviceID(%q): got nil, want an error", bad)
		}
	}
}

func TestInstanceID(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, tt := range []struct{ in, want string }{
		{"0123abcd", "0123abcd"},
		{"vm-1", "vm-1"},
		{"vm_1", "vm-1"},
		{"dev.vm", "dev-vm"},
		{long, long[:64]},
		{"", "vm"},
	} {
		got := firecracker.InstanceID(tt.in)
		if got != tt.want {
			t.Errorf("InstanceID(%q): got %q, want %q", tt.in, got, tt.want)
		}
		if err := firecracker.ValidateInstanceID(got); err != nil {
			t.Errorf("InstanceID(%q) = %q is not valid: %v", tt.in, got, err)
		}
	}
	for _, bad := range []string{"", "vm_1", long, "a b"} {
		if firecracker.ValidateInstanceID(bad) == nil {
			t.Errorf("ValidateInstanceID(%q): got nil, want an error", bad)
		}
	}
}

func TestEnsureRebootK(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", "reboot=k"},
		{"console=ttyS0 panic=1", "console=ttyS0 panic=1 reboot=k"},
		{"console=ttyS0 reboot=k", "console=ttyS0 reboot=k"},
		{"reboot=t console=ttyS0", "reboot=k console=ttyS0"},
		{"reboot=t reboot=w quiet", "reboot=k quiet"},
		{"console=ttyS0 -- reboot=t --init-flag", "console=ttyS0 reboot=k -- reboot=t --init-flag"},
		{"-- init args", "reboot=k -- init args"},
		{"a--b", "a--b reboot=k"},
	} {
		if got := firecracker.EnsureRebootK(tt.in); got != tt.want {
			t.Errorf("EnsureRebootK(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
