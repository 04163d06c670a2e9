package jailrun

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/privileged"
)

const owner = 4242 // the jail's uid and gid: an unprivileged owner

// fixture is a Runner's jail with its directories made, and a source file factory.
type fixture struct {
	r *Runner
	j Jail
}

func newFixture(t *testing.T, base string) fixture {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: builds a jail (chown, mknod)")
	}
	r := &Runner{base: base, uid: owner, gid: owner}
	j := r.jail("vm1", nil, "")
	if err := j.prepare(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.remove() })
	return fixture{r: r, j: j}
}

// source writes a file of uid's at p and opens it O_PATH, as the helper does.
func source(t *testing.T, p string, uid int) *os.File {
	t.Helper()
	if err := os.WriteFile(p, []byte("a disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p)
	t.Cleanup(func() { f.Close() })
	return f
}

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// TestPrepare: the jail's root is root's, its /run and Firecracker's log the owner's.
func TestPrepare(t *testing.T) {
	f := newFixture(t, t.TempDir())
	for _, c := range []struct {
		path      string
		uid, mode uint32
	}{
		{f.j.ChrootDir(), 0, unix.S_IFDIR | 0o755},
		{f.j.HostPath("/run"), owner, unix.S_IFDIR | 0o750},
		{f.j.HostPath(LogPath), owner, unix.S_IFREG | 0o600},
	} {
		if st := stat(t, c.path); st.Uid != c.uid || st.Mode != c.mode {
			t.Errorf("%s: uid %d mode %o, want uid %d mode %o", c.path, st.Uid, st.Mode, c.uid, c.mode)
		}
	}
}

// TestPlaceKeepsTheOwner: a file is placed by its descriptor as a hard link, the
// same inode with the same owner and mode: nothing about the source changes but
// its link count, and only while the jail exists. Placing never chowns, whoever's
// the file is (the helper places only the owner's; the old runner chowned a
// writable file's inode to the jail's uid, which handed root's files over).
func TestPlaceKeepsTheOwner(t *testing.T) {
	for _, uid := range []int{owner, 0, 4343} {
		dir := t.TempDir()
		f := newFixture(t, filepath.Join(dir, "jail"))
		src := filepath.Join(dir, "root.img")
		file := source(t, src, uid)
		if err := f.r.place(f.j, privileged.JailFile{Src: src, File: file, Dst: privileged.JailDstRootfs, Writable: true}); err != nil {
			t.Fatal(err)
		}
		s, d := stat(t, src), stat(t, f.j.HostPath(privileged.JailDstRootfs))
		if s.Ino != d.Ino || int(s.Uid) != uid || int(s.Gid) != uid || s.Mode != unix.S_IFREG|0o600 || s.Nlink != 2 {
			t.Errorf("uid %d: source %+v, placed %+v: want the same inode, still %d's 0600, two links", uid, s, d, uid)
		}
		if err := f.j.remove(); err != nil {
			t.Fatal(err)
		}
		if s := stat(t, src); s.Nlink != 1 || int(s.Uid) != uid {
			t.Errorf("uid %d: source after the jail went: %d links, uid %d", uid, s.Nlink, s.Uid)
		}
	}
}

// TestPlaceAcrossFilesystems: a read-only file on another filesystem is copied
// (root's, 0444: the source is untouched); a writable one is refused, since the
// guest's writes would go to a copy.
func TestPlaceAcrossFilesystems(t *testing.T) {
	other, err := os.MkdirTemp("/dev/shm", "bj-")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	f := newFixture(t, t.TempDir())
	var a, b unix.Statfs_t
	if unix.Statfs(other, &a) != nil || unix.Statfs(f.j.ChrootDir(), &b) != nil || a.Type == b.Type {
		t.Skip("/dev/shm and the jail are on the same kind of filesystem")
	}
	kernel := filepath.Join(other, "vmlinux")
	if err := f.r.place(f.j, privileged.JailFile{Src: kernel, File: source(t, kernel, owner), Dst: privileged.JailDstKernel}); err != nil {
		t.Fatal(err)
	}
	if d := stat(t, f.j.HostPath(privileged.JailDstKernel)); d.Uid != 0 || d.Mode != unix.S_IFREG|0o444 {
		t.Errorf("copied kernel: uid %d mode %o, want root's 0444", d.Uid, d.Mode)
	}
	if s := stat(t, kernel); s.Uid != owner || s.Nlink != 1 {
		t.Errorf("source kernel changed: uid %d, %d links", s.Uid, s.Nlink)
	}
	disk := filepath.Join(other, "root.img")
	err = f.r.place(f.j, privileged.JailFile{Src: disk, File: source(t, disk, owner), Dst: privileged.JailDstRootfs, Writable: true})
	if err == nil || !strings.Contains(err.Error(), "different filesystems") {
		t.Errorf("writable disk across filesystems: got %v, want a refusal", err)
	}
}

// TestPlaceBlockDevice: a block device gets a node of the same number in the jail,
// made here and so handed to the owner; the source node is untouched.
func TestPlaceBlockDevice(t *testing.T) {
	f := newFixture(t, t.TempDir())
	fd, err := unix.Open("/dev/loop0", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skip("no /dev/loop0:", err)
	}
	file := os.NewFile(uintptr(fd), "/dev/loop0")
	defer file.Close()
	before := stat(t, "/dev/loop0")
	if err := f.r.place(f.j, privileged.JailFile{Src: "/dev/loop0", File: file, Dst: privileged.JailDstRootfs, Writable: true}); err != nil {
		t.Fatal(err)
	}
	d := stat(t, f.j.HostPath(privileged.JailDstRootfs))
	if d.Mode != unix.S_IFBLK|0o600 || d.Rdev != before.Rdev || d.Uid != owner {
		t.Errorf("placed node: mode %o rdev %d uid %d, want a 0600 block device %d of the owner's", d.Mode, d.Rdev, d.Uid, before.Rdev)
	}
	if after := stat(t, "/dev/loop0"); after.Uid != before.Uid || after.Mode != before.Mode {
		t.Errorf("/dev/loop0 changed: uid %d mode %o", after.Uid, after.Mode)
	}
}

// TestLaunchWithoutBinaries: a runner whose binaries were refused answers why and
// builds nothing.
func TestLaunchWithoutBinaries(t *testing.T) {
	base := filepath.Join(t.TempDir(), "jail")
	r := New(Options{Jailer: "/nonexistent/jailer", Firecracker: "firecracker", ChrootBase: base, UID: owner, GID: owner})
	if r.Missing() == "" {
		t.Fatal("a missing jailer passed")
	}
	_, err := r.Launch(context.Background(), privileged.JailSpec{ID: "vm1"})
	if err == nil || !strings.Contains(err.Error(), "jail ops unavailable") {
		t.Fatalf("got %v, want the reason", err)
	}
	if _, err := os.Lstat(base); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the chroot base was made: %v", err)
	}
}
