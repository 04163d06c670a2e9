package firecracker_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

const nobody = 65534

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the jail's files are chowned to an unprivileged uid and device nodes are made with mknod")
	}
}

// becomeSubreaper makes this process adopt the orphans of its children, as
// a daemonized jailer leaves Firecracker, so the test can reap them.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

func fakeEnv(t *testing.T, mode, journal string) []string {
	t.Helper()
	specPath, err := fctest.FindSpec(fctest.SpecV1161)
	if err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), fctest.FakeModeEnv+"="+mode, fctest.FakeSpecEnv+"="+specPath, fctest.FakeJournalEnv+"="+journal)
}

// TestJailedLifecycle runs the whole jailer path with this test binary as a
// fake jailer and a fake firecracker (fctest.RunFakeJailer, which emulates
// the chroot by taking every path under the jail's root): prepare the
// chroot, launch, find Firecracker by the PID file, reach the API socket at
// its host path, configure with jail paths (a stale vsock socket in the jail
// removed through HostPath), boot, shut down gracefully, remove the jail.
func TestJailedLifecycle(t *testing.T) {
	requireRoot(t)
	becomeSubreaper(t)
	h := newHarness(t, fctest.SpecV1161)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	j := firecracker.Jailer{
		Binary: self, ExecFile: self, ID: "vm-1", UID: nobody, GID: nobody,
		ChrootBaseDir: filepath.Join(h.dir, "jail"),
		Cgroups:       []string{firecracker.CPUMax(1)},
	}
	files := []firecracker.JailFile{
		{Src: h.kernel, Dst: firecracker.JailKernel},
		{Src: h.rootfs, Dst: firecracker.JailRootfs, Writable: true},
	}
	if err := j.PrepareChroot(files); err != nil {
		t.Fatal(err)
	}
	if err := j.PrepareChroot(files); err != nil {
		t.Fatalf("PrepareChroot again (retry): %v", err)
	}
	assertSameFile(t, h.kernel, j.HostPath(firecracker.JailKernel))
	assertSameFile(t, h.rootfs, j.HostPath(firecracker.JailRootfs))
	assertOwner(t, j.HostPath(firecracker.JailRootfs), nobody)
	assertOwner(t, j.HostPath("/run"), nobody)

	// A vsock socket left in the jail by an earlier run.
	ln, err := net.Listen("unix", j.HostPath(firecracker.JailVsockSocket))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	ctx := testCtx(t)
	journal := filepath.Join(h.dir, "journal")
	pid, err := firecracker.LaunchJailed(ctx, j, firecracker.LaunchOptions{Stderr: os.Stderr, Env: fakeEnv(t, "jailer", journal)})
	if err != nil {
		t.Fatal(err)
	}
	proc, err := firecracker.OpenPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Kill()
		_ = proc.Wait(context.Background())
		_ = proc.Close()
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil) // reap the adopted orphan
	})

	c := firecracker.NewClient(j.APISocketHostPath())
	t.Cleanup(c.Close)
	if err := c.WaitReady(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if info, err := c.InstanceInfo(ctx); err != nil || info.ID != "vm-1" {
		t.Fatalf("instance: got %+v, %v; want the jailer's --id vm-1", info, err)
	}
	m := firecracker.NewMachine(firecracker.MachineDeps{Client: c, ChrootDir: j.ChrootDir()})
	spec := firecracker.MachineSpec{
		VCPUs: 1, MemMiB: 128,
		KernelPath: firecracker.JailKernel,
		RootDrive:  firecracker.DriveSpec{Path: firecracker.JailRootfs},
		Vsock:      &firecracker.VsockSpec{CID: 3, UDSPath: firecracker.JailVsockSocket},
		Logger:     &firecracker.LoggerSpec{Path: firecracker.JailLog},
	}
	if err := m.Configure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(j.HostPath(firecracker.JailVsockSocket)); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("vsock socket on the host: got %v, %v; want a socket bound in the jail", fi, err)
	}
	graceful, err := m.Shutdown(ctx, 4*time.Second, proc)
	if err != nil || !graceful {
		t.Fatalf("shutdown: got %v, %v; want graceful", graceful, err)
	}
	recs, err := fctest.ReadJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	fctest.CheckClean(t, recs)

	if err := j.RemoveJail(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(j.JailDir()); !os.IsNotExist(err) {
		t.Errorf("jail dir: got %v, want it removed", err)
	}
	for _, f := range []string{h.kernel, h.rootfs} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("original %s: %v; RemoveJail must leave it", f, err)
		}
	}
}

func TestLaunchJailedReportsJailerFailure(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	j := firecracker.Jailer{Binary: self, ExecFile: "/nonexistent/firecracker", ID: "vm-2", UID: nobody, GID: nobody, ChrootBaseDir: filepath.Join(h.dir, "jail")}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	_, err = firecracker.LaunchJailed(testCtx(t), j, firecracker.LaunchOptions{Stderr: devnull, Env: fakeEnv(t, "jailer", filepath.Join(h.dir, "j"))})
	if err == nil || !strings.Contains(err.Error(), "jailer vm-2: exit status 1") {
		t.Errorf("got %v, want the jailer's failure", err)
	}
}

func TestPrepareChrootAcrossFilesystems(t *testing.T) {
	requireRoot(t)
	shm, err := os.MkdirTemp("/dev/shm", "fc")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	h := newHarness(t, fctest.SpecV1161)
	if devOf(t, shm) == devOf(t, h.dir) {
		t.Skip("/dev/shm and the temp dir share a filesystem")
	}
	kernel := filepath.Join(shm, "vmlinux")
	if err := os.WriteFile(kernel, []byte("kernel bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	j := firecracker.Jailer{Binary: "/usr/bin/jailer", ExecFile: "/usr/bin/firecracker", ID: "vm-3", UID: nobody, GID: nobody, ChrootBaseDir: filepath.Join(h.dir, "jail")}
	t.Cleanup(func() { _ = j.RemoveJail() })
	if err := j.PrepareChroot([]firecracker.JailFile{{Src: kernel, Dst: firecracker.JailKernel}}); err != nil {
		t.Fatalf("read-only file across filesystems: %v; want it copied", err)
	}
	if b, err := os.ReadFile(j.HostPath(firecracker.JailKernel)); err != nil || string(b) != "kernel bytes" {
		t.Errorf("copied kernel: got %q, %v", b, err)
	}
	err = j.PrepareChroot([]firecracker.JailFile{{Src: kernel, Dst: firecracker.JailRootfs, Writable: true}})
	if err == nil || !strings.Contains(err.Error(), "cannot be copied") {
		t.Errorf("writable file across filesystems: got %v, want a refusal", err)
	}
}

func TestPrepareChrootBlockDevice(t *testing.T) {
	requireRoot(t)
	var dev string
	for _, d := range []string{"/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"} {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Type() == os.ModeDevice {
			dev = d
			break
		}
	}
	if dev == "" {
		t.Skip("no block device to mirror")
	}
	h := newHarness(t, fctest.SpecV1161)
	j := firecracker.Jailer{Binary: "/usr/bin/jailer", ExecFile: "/usr/bin/firecracker", ID: "vm-4", UID: nobody, GID: nobody, ChrootBaseDir: filepath.Join(h.dir, "jail")}
	t.Cleanup(func() { _ = j.RemoveJail() })
	if err := j.PrepareChroot([]firecracker.JailFile{{Src: dev, Dst: firecracker.JailRootfs, Writable: true}}); err != nil {
		t.Fatal(err)
	}
	var src, dst unix.Stat_t
	if err := unix.Stat(dev, &src); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(j.HostPath(firecracker.JailRootfs), &dst); err != nil {
		t.Fatal(err)
	}
	if dst.Mode&unix.S_IFMT != unix.S_IFBLK || dst.Rdev != src.Rdev || dst.Uid != nobody {
		t.Errorf("jail node: got mode %o rdev %d uid %d; want a block device %d owned by %d", dst.Mode, dst.Rdev, dst.Uid, src.Rdev, nobody)
	}
}

func assertSameFile(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fa, fb) {
		t.Errorf("%s is not a hard link of %s", b, a)
	}
}

func assertOwner(t *testing.T, p string, uid int) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := int(fi.Sys().(*syscall.Stat_t).Uid); got != uid {
		t.Errorf("%s: owner got %d, want %d", p, got, uid)
	}
}

func devOf(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Dev)
}
