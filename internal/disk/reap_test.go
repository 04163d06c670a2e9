package disk_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/disk"
	"banger/internal/disk/disktest"
)

// A qcow2 grow killed mid-way leaves a dead FUSE mount in the VM's directory; Reap
// unmounts it.
func TestReapUnmountsDeadFUSEExport(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a FUSE export")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
	disktest.RequireTools(t, "qemu-storage-daemon", "qemu-img")
	_, disks := dirs(t, t.TempDir())
	vmDir := filepath.Join(disks, "crashed")
	if err := os.Mkdir(vmDir, 0o750); err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(vmDir, "root.qcow2"), filepath.Join(vmDir, ".grow-export")
	disktest.Cmd(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	if err := os.WriteFile(mnt, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	pid := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", js(map[string]any{"driver": "file", "node-name": "f", "filename": img}),
		"--blockdev", js(map[string]any{"driver": "qcow2", "node-name": "q", "file": "f"}),
		"--export", js(map[string]any{"type": "fuse", "id": "e", "node-name": "q", "mountpoint": mnt, "writable": true}),
		"--pidfile", pid)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !mounted(t, mnt) {
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the FUSE export never appeared")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := cmd.Process.Kill(); err != nil { // the crash: no clean unmount
		t.Fatal(err)
	}
	cmd.Wait()
	if !mounted(t, mnt) {
		t.Fatal("killing the daemon unmounted the export; this test needs a dead mount")
	}
	if err := disk.Reap(context.Background(), disk.Config{DisksDir: disks}, nil); err != nil {
		t.Fatal(err)
	}
	if mounted(t, mnt) {
		t.Errorf("%s is still mounted after Reap", mnt)
	}
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+path+" ")
}
