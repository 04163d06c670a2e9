package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testutil"
)

// TestBadInput: each bad request is a clear error and leaves nothing behind.
func TestBadInput(t *testing.T) {
	e := newEnv(t, 1)
	// --disk-strategy is honoured (copy works everywhere, and is never auto's first
	// choice on this host).
	if v := e.vmRun("taken", "-p", "18181:8080", "--disk-strategy", "copy"); v.Disk.Strategy != "copy" {
		t.Errorf("--disk-strategy copy made a %q disk", v.Disk.Strategy)
	}

	// A kernel that cannot boot: the host kernel without banger's initramfs has no
	// virtio-blk driver built in, so it panics looking for its root.
	hosts, _ := filepath.Glob("/boot/vmlinuz-*")
	kpath := filepath.Join(e.root, "bare-kernel")
	testutil.Run(t, "cp", hosts[0], kpath)
	testutil.Run(t, "chmod", "0644", kpath)
	e.must("kernel", "import", kpath, "--name", "bare")

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"duplicate name", []string{"--name", "taken", "busybox"}, []string{`"taken" already exists`, "vm rm taken"}},
		{"unknown image", []string{"--name", "x1", "nosuchimage"}, []string{`no image named "nosuchimage"`, "banger image pull"}},
		{"invalid name", []string{"--name", "Bad_Name!", "busybox"}, []string{"not valid", "lowercase"}},
		{"too little memory", []string{"--name", "x2", "--memory", "16M", "busybox"}, []string{"too little", "128M"}},
		{"bad memory size", []string{"--name", "x3", "--memory", "lots", "busybox"}, []string{"write it like 512M"}},
		{"bad publish", []string{"--name", "x4", "-p", "99999:80", "busybox"}, []string{"99999"}},
		// Found before anything boots, naming the other VM by its name.
		{"port published by another VM", []string{"--name", "x7", "-p", "18181:80", "busybox"}, []string{`already published by VM "taken"`}},
		{"unknown disk strategy", []string{"--name", "x8", "--disk-strategy", "zfs", "busybox"}, []string{`disk strategy "zfs" is unknown`, "auto, dm-snapshot"}},
		{"unknown kernel", []string{"--name", "x5", "--kernel", "nosuch", "busybox"}, []string{`no kernel named "nosuch"`}},
		{"kernel that never boots", []string{"--name", "x6", "--kernel", "bare", "busybox"}, []string{"before the guest agent answered", "last console lines", "Kernel panic"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := e.banger(append([]string{"vm", "run", "--memory", "256M"}, tt.args...)...)
			if err == nil {
				t.Fatalf("vm run %v succeeded:\n%s", tt.args, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("error lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if out := e.must("vm", "ls", "-q"); strings.TrimSpace(out) != "taken" {
		t.Errorf("VMs after the failures: %q; want only taken", out)
	}
	e.must("vm", "rm", "-f", "taken")
	e.assertNothingLeaked()
	ents, _ := os.ReadDir(filepath.Join(e.root, "state/ssh/hostkeys"))
	if len(ents) != 0 {
		t.Errorf("host keys left: %d files", len(ents))
	}
}
