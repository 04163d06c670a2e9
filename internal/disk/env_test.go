package disk_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"banger/internal/disk/disktest"
)

// dirs makes the images and disks directories under root.
func dirs(tb testing.TB, root string) (images, disks string) {
	tb.Helper()
	images, disks = filepath.Join(root, "images"), filepath.Join(root, "disks")
	for _, d := range []string{images, disks} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			tb.Fatal(err)
		}
	}
	return images, disks
}

// mountXFS formats a sparse file of size bytes as XFS with reflinks (mkfs.xfs needs
// about 300 MB at least), loop-mounts it and returns the mountpoint. It is unmounted
// (which frees its autoclear loop device) when the test ends.
func mountXFS(tb testing.TB, size int64) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loop-mounts an XFS image to get a filesystem with reflinks")
	}
	disktest.RequireTools(tb, "mkfs.xfs", "mount", "umount")
	dir := tb.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		tb.Fatal(err)
	}
	disktest.Cmd(tb, "mkfs.xfs", "-q", "-m", "reflink=1", img)
	disktest.Cmd(tb, "mount", "-o", "loop", img, mnt)
	tb.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			tb.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

// xfsSize is the XFS image size the conformance suite uses.
const xfsSize = 320 << 20
