package initsys_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agent/initsys"

	"golang.org/x/sys/unix"
)

func requireLoopExt4(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("attaches a loop device and mounts ext4: needs root (CI runs as root)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux, e2fsprogs)", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop device support here: %v", err)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func blockSize(t *testing.T, dir string) uint64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return uint64(fs.Bsize)
}

// hasCapability reports whether this process has capability c in effect.
func hasCapability(t *testing.T, c uint) bool {
	t.Helper()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

func statfsBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return fs.Blocks * uint64(fs.Bsize)
}

// TestGrowFSOnline is the qcow2 case of a VM whose disk was made larger than its
// filesystem: a mounted 64 MiB ext4 whose device then grows to 128 MiB is grown
// online to fill it.
func TestGrowFSOnline(t *testing.T) {
	requireLoopExt4(t)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "root.ext4"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", img)
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	if err := os.WriteFile(filepath.Join(mnt, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := statfsBytes(t, mnt)

	// the disk grows under the mounted filesystem
	if err := os.Truncate(img, 128<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "losetup", "-c", dev)

	g, err := initsys.GrowFS(mnt)
	if !hasCapability(t, unix.CAP_SYS_RESOURCE) {
		// ext4 checks the capability first thing in its resize path, so EPERM
		// (not ENOTTY) still shows the request reached it, with the right size
		blocks := fmt.Sprintf("to %d blocks of %d bytes", 128<<20/blockSize(t, mnt), blockSize(t, mnt))
		if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), blocks) || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
			t.Errorf("GrowFS without CAP_SYS_RESOURCE: got %v, want EPERM naming the capability and %q", err, blocks)
		}
		if got := statfsBytes(t, mnt); got != before {
			t.Errorf("filesystem size after a refused resize: got %d, want %d", got, before)
		}
		t.Skip("this process lacks CAP_SYS_RESOURCE (a container that drops it), which ext4 requires to resize; checked the request up to the kernel's refusal")
	}
	if err != nil {
		t.Fatalf("GrowFS: %v", err)
	}
	after := statfsBytes(t, mnt)
	if g.DeviceBytes != 128<<20 {
		t.Errorf("device size: got %d, want %d", g.DeviceBytes, 128<<20)
	}
	if g.Before != before || g.After != after {
		t.Errorf("reported sizes: got %d → %d, want statfs's %d → %d", g.Before, g.After, before, after)
	}
	// ext4's metadata takes a few MiB of each; the data area must have grown by
	// nearly the 64 MiB added
	if after < before+60<<20 || after > 128<<20 {
		t.Errorf("filesystem size: got %d → %d bytes, want it grown by about 64 MiB to under 128 MiB", before, after)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "data")); err != nil || string(b) != "kept" {
		t.Errorf("a file written before growing: got %q, %v", b, err)
	}

	// a filesystem that fills its device already is left as it is
	again, err := initsys.GrowFS(mnt)
	if err != nil || again.After != after || again.Before != after {
		t.Errorf("second GrowFS: got %+v, %v; want no change from %d", again, err, after)
	}
}

func TestGrowFSRefusesOtherFilesystems(t *testing.T) {
	// /proc is never ext4; never point this test at a real disk's filesystem
	if _, err := initsys.GrowFS("/proc"); err == nil || !strings.Contains(err.Error(), "not ext4") {
		t.Errorf("GrowFS(/proc): got %v, want an error saying it is not ext4", err)
	}
	if _, err := initsys.GrowFS(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("GrowFS(missing directory): got success")
	}
}
