package guestinit

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRemoveSameDevKeepsMounts checks the guard that makes freeing the
// initramfs safe: files on the top directory's device go, a mount inside
// it (the new root) is left whole.
func TestRemoveSameDevKeepsMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	top := t.TempDir()
	mnt := filepath.Join(top, "newroot")
	for _, d := range []string{mnt, filepath.Join(top, "lib/modules/x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	for _, f := range []string{"init", "lib/modules/x/a.ko", "newroot/keep"} {
		if err := os.WriteFile(filepath.Join(top, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(top, "link")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(top, &st); err != nil {
		t.Fatal(err)
	}
	if err := removeSameDev(top, st.Dev, true); err != nil {
		t.Fatalf("removeSameDev: %v", err)
	}
	ents, _ := os.ReadDir(top)
	if len(ents) != 1 || ents[0].Name() != "newroot" {
		t.Errorf("left %v, want only newroot", ents)
	}
	if _, err := os.Stat(filepath.Join(mnt, "keep")); err != nil {
		t.Errorf("a file inside the mount was removed: %v", err)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("the symlink's target was touched: %v", err)
	}
}
