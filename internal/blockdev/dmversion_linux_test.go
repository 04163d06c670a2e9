package blockdev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelHasDM says whether the running kernel registered device-mapper's misc device,
// the ground truth dmVersion must agree with.
func kernelHasDM(t *testing.T) bool {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), "device-mapper")
}

// TestDMVersionAsksTheKernel plants control nodes that exist but are not a working
// device-mapper (the situation a stray `dmsetup` run leaves on a kernel without it)
// and checks each is refused with its reason, while a node with device-mapper's
// numbers answers exactly when the kernel has the driver.
func TestDMVersionAsksTheKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	dir := t.TempDir()
	mk := func(name string, mode uint32, major, minor uint32) string {
		p := filepath.Join(dir, name)
		if err := unix.Mknod(p, mode, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
		return p
	}
	// device-mapper's control node is misc (10) minor 236; without the driver,
	// opening it fails with ENODEV.
	dmNode := mk("control", unix.S_IFCHR|0o600, 10, 236)
	nullNode := mk("null", unix.S_IFCHR|0o600, 1, 3) // answers open, not DM_VERSION
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path string
		want       string // "" means available
	}{
		{"missing node", filepath.Join(dir, "nope"), "is missing"},
		{"another character device", nullNode, "does not answer DM_VERSION"},
		{"regular file", regular, "not a character device"},
		{"device-mapper's numbers", dmNode, map[bool]string{true: "", false: "no driver answers it"}[kernelHasDM(t)]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := dmVersion(tt.path)
			if tt.want == "" {
				if err != nil || v[0] != 4 {
					t.Fatalf("dmVersion = %v, %v; want version 4.x", v, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("dmVersion = %v, %v; want an error containing %q", v, err, tt.want)
			}
			if !strings.Contains(err.Error(), "device-mapper is not available") {
				t.Errorf("error %q does not say device-mapper is not available", err)
			}
		})
	}
}
