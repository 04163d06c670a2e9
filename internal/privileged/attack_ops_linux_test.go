package privileged_test

// Attacks on the ops' arguments, as the owner, against the real banger-helper: path
// tricks aimed at root's files (stand-ins under attackEnv.victim), races provoked by
// flipping a symlink while the helper checks and uses a path, and every op pointed at
// other users' files, devices and interfaces. Each asserts the refusal and that the
// host is unchanged (see attackEnv.attack).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
	"banger/internal/privileged"
)

// raceFor bounds each provoked race.
const raceFor = 3 * time.Second

// ownerDir makes dir (and parents) owned by the owner, as the owner would.
func (e *attackEnv) ownerDir(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	e.chownOwner(t, dir)
	return dir
}

// jailExec is the name of the helper's firecracker binary (vmm.firecracker in the
// attack environment's config.toml), which names its jails' directories.
const jailExec = "true"

// jailRunPath is the /run of jail id under the root's jail base.
func (e *attackEnv) jailRunPath(id string) string {
	return filepath.Join(e.root, "jail", jailExec, id, "root", "run")
}

// jailRun makes the /run of jail id: the jail base and the jail's own directory
// root's, its /run the owner's (firecracker runs as the owner and makes its sockets
// there). The jail's root is made the owner's too, which lets the owner swap /run
// itself: more than a jail gives it, so that the helper is shown not to depend on
// the jail root being root's.
func (e *attackEnv) jailRun(t testing.TB, id string) string {
	t.Helper()
	r := e.jailRunPath(id)
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(r)), 0o755); err != nil {
		t.Fatal(err)
	}
	e.ownerDir(t, filepath.Dir(r))
	e.ownerDir(t, r)
	return r
}

// mksock makes a unix socket file at p owned by uid (its listener closed: only the
// file matters here).
func mksock(t testing.TB, p string, uid, gid int) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	mustChown(t, p, uid, gid)
}

func mustWrite(t testing.TB, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustChown(t testing.TB, p string, uid, gid int) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// mknod makes a device node owned by uid.
func mknod(t testing.TB, p string, mode uint32, major, minor uint32, uid, gid int) {
	t.Helper()
	if err := unix.Mknod(p, mode|0o660, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatalf("mknod %s: %v", p, err)
	}
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// mkfifo makes a FIFO owned by uid.
func mkfifo(t testing.TB, p string, uid, gid int) {
	t.Helper()
	if err := unix.Mkfifo(p, 0o660); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// hardlink links old at new (as root: the kernel's protected_hardlinks would stop the
// owner only for files it cannot read and write; the helper must not rely on it).
func hardlink(t testing.TB, old, new string) {
	t.Helper()
	if err := os.Link(old, new); err != nil {
		t.Fatal(err)
	}
}

// quick fails t when a call took so long that it must have blocked on something.
func quick(t testing.TB, what string, start time.Time) {
	t.Helper()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("%s took %v: the helper blocked on it", what, d)
	}
}

// flipper exchanges a and b (renameat2 RENAME_EXCHANGE) in a loop until stopped, so
// that a path the helper checks is one thing one instant and another the next. It
// always stops after an even number of exchanges: a and b end as they started.
type flipper struct {
	stop  chan struct{}
	done  chan struct{}
	flips atomic.Int64
}

func startFlipper(t testing.TB, a, b string) *flipper {
	t.Helper()
	f := &flipper{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			for i := 0; i < 2; i++ {
				if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
					// Gone (a legitimate removal took them): the watched state
					// says whether that was right.
					if !errors.Is(err, unix.ENOENT) {
						t.Errorf("flip %s and %s: %v", a, b, err)
					}
					return
				}
				f.flips.Add(1)
			}
			select {
			case <-f.stop:
				return
			default:
			}
		}
	}()
	return f
}

func (f *flipper) Stop() int64 {
	close(f.stop)
	<-f.done
	return f.flips.Load()
}

// race calls fn from two goroutines until raceFor has passed, while a flipper runs,
// and returns how many calls were accepted (answered 200) and refused.
func race(t testing.TB, a, b string, fn func() reply) (accepted, refusedN int64) {
	t.Helper()
	return raceWith(t, a, b, func(r reply) bool { return r.Status == http.StatusOK }, fn)
}

// reachedJailer says whether a JailLaunch passed every check: the jailer of the
// attack environment, /usr/bin/false, then fails it.
func reachedJailer(r reply) bool {
	return r.Status == http.StatusOK || r.Err.Code == privileged.CodeFailed
}

// raceWith is race with the caller's idea of an accepted call.
func raceWith(t testing.TB, a, b string, ok func(reply) bool, fn func() reply) (accepted, refusedN int64) {
	t.Helper()
	f := startFlipper(t, a, b)
	var wg sync.WaitGroup
	var acc, ref atomic.Int64
	deadline := time.Now().Add(raceFor)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				r := fn()
				switch {
				case r.Trans != nil:
					t.Errorf("call during the race: %v", r.Trans)
					return
				case ok(r):
					acc.Add(1)
				default:
					ref.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	flips := f.Stop()
	t.Logf("race: %d flips, %d calls accepted, %d refused", flips, acc.Load(), ref.Load())
	return acc.Load(), ref.Load()
}

// TestAttackPaths aims ChownToOwner, LoopAttach and JailLaunch at root's files
// through every path trick the owner has: lexical tricks, symlinks, magic links,
// hard links, special files, other users' files and symlinks swapped mid-call.
func TestAttackPaths(t *testing.T) {
	e := newAttackEnv(t)
	shadow := filepath.Join(e.victim, "shadow")
	vdisk := filepath.Join(e.victim, "disk.img")
	run := e.lay.RunDir
	disks := e.lay.DisksDir()
	images := e.lay.ImagesDir()
	chown := func(t *testing.T, p string) {
		t.Helper()
		start := time.Now()
		refused(t, "ChownToOwner "+strconv.Quote(p), e.call(t, privileged.OpChownToOwner, privileged.ChownToOwnerRequest{Path: p}), privileged.CodeInvalid)
		quick(t, "ChownToOwner", start)
	}
	loop := func(t *testing.T, p string, ro bool) {
		t.Helper()
		start := time.Now()
		refused(t, "LoopAttach "+strconv.Quote(p), e.call(t, privileged.OpLoopAttach, privileged.LoopAttachRequest{Path: p, ReadOnly: ro}), privileged.CodeInvalid)
		quick(t, "LoopAttach", start)
		// Over the victims, or over anything in the root (a hard link to a victim is
		// reported by the kernel under its path in the root).
		noLoopsOver(t, e.victim, e.root)
	}
	// A jail whose kernel is a valid owner file; tests replace one field.
	kernel := filepath.Join(images, "vmlinux")
	rootfs := filepath.Join(disks, "jailvm", "rootfs.ext4")
	e.ownerFile(t, kernel, 4096)
	e.ownerFile(t, rootfs, 4096)
	jailReq := func(kernelSrc, rootfsSrc, console string) privileged.JailLaunchRequest {
		return privileged.JailLaunchRequest{
			ID: "jailvm",
			Files: []privileged.JailFileSpec{
				{Src: kernelSrc, Dst: privileged.JailDstKernel},
				{Src: rootfsSrc, Dst: privileged.JailDstRootfs, Writable: true},
			},
			FirecrackerArgs: []string{"--api-sock", "/run/firecracker.socket"},
			ConsoleLog:      console,
		}
	}
	vmLogs := e.ownerDir(t, filepath.Join(e.lay.LogDir, "vms"))
	console := filepath.Join(vmLogs, "jailvm.console.log")
	jail := func(t *testing.T, what string, req privileged.JailLaunchRequest) {
		t.Helper()
		start := time.Now()
		refused(t, "JailLaunch "+what, e.call(t, privileged.OpJailLaunch, req), privileged.CodeInvalid)
		quick(t, "JailLaunch", start)
	}

	// ChownToOwner hands over only sockets a jailed firecracker made in its jail's
	// /run, which is the owner's: that directory is where the owner plants.
	jr := e.jailRun(t, "vm1")
	victimSock := filepath.Join(e.victim, "root.sock")
	mksock(t, victimSock, 0, 0)
	mksock(t, filepath.Join(jr, "api.sock"), e.ownerUID, e.ownerGID)
	if r := e.call(t, privileged.OpChownToOwner, privileged.ChownToOwnerRequest{Path: filepath.Join(jr, "api.sock")}); r.Status != http.StatusOK {
		t.Errorf("ChownToOwner of the owner's own jail socket, which the attacks below twist, must be accepted: %s", r)
	}

	e.attack(t, "ChownToOwner dotdot out of the root", nil, func(t *testing.T) {
		for _, p := range []string{
			jr + "/../../../../../../.." + victimSock,
			jr + "/../run/api.sock",
			jr + "/..",
			e.root + "/state/disks/../../../.." + shadow,
			e.root + "/..",
		} {
			chown(t, p)
		}
	})

	e.attack(t, "ChownToOwner unclean paths", func(t *testing.T) {
		e.ownerSymlink(t, victimSock, filepath.Join(jr, "unclean-lnk"))
	}, func(t *testing.T) {
		for _, p := range []string{
			jr + "//api.sock",
			jr + "/./api.sock",
			jr + "/unclean-lnk/",
			jr + "/unclean-lnk/.",
			"/" + jr + "/api.sock",
			strings.TrimPrefix(jr, "/") + "/api.sock", // relative
			"",
		} {
			chown(t, p)
		}
	})

	e.attack(t, "ChownToOwner NUL bytes", nil, func(t *testing.T) {
		for _, p := range []string{
			jr + "/api.sock\x00/../../../../../../.." + victimSock,
			victimSock + "\x00" + jr + "/api.sock",
			jr + "/api.sock\x00",
		} {
			chown(t, p)
		}
	})

	e.attack(t, "ChownToOwner very long paths", nil, func(t *testing.T) {
		long := jr + strings.Repeat("/aaaaaaaaaaaaaaa", 3500) // ~56 KiB, under the body cap
		chown(t, long)
		chown(t, long+"/../../.."+shadow)
		chown(t, jr+"/"+strings.Repeat("b", 300)) // one component past NAME_MAX
	})

	e.attack(t, "ChownToOwner through /proc magic links", func(t *testing.T) {
		e.ownerSymlink(t, "/proc/self/root"+victimSock, filepath.Join(jr, "m-root.sock"))
		e.ownerSymlink(t, fmt.Sprintf("/proc/%d/root%s", e.helper, victimSock), filepath.Join(jr, "m-helperroot.sock"))
		e.ownerSymlink(t, "/proc/self/fd/0", filepath.Join(jr, "m-fd0.sock"))
		e.ownerSymlink(t, "/proc/thread-self/cwd/"+victimSock, filepath.Join(jr, "m-cwd.sock"))
	}, func(t *testing.T) {
		paths := []string{
			"/proc/self/root" + victimSock,
			fmt.Sprintf("/proc/%d/root%s", e.helper, victimSock),
			"/proc/self/cwd/" + victimSock,
			filepath.Join(jr, "m-root.sock"), filepath.Join(jr, "m-helperroot.sock"), filepath.Join(jr, "m-fd0.sock"), filepath.Join(jr, "m-cwd.sock"),
		}
		for fd := 0; fd < 12; fd++ {
			paths = append(paths, fmt.Sprintf("/proc/%d/fd/%d", e.helper, fd), fmt.Sprintf("/proc/self/fd/%d", fd))
		}
		for _, p := range paths {
			chown(t, p)
		}
	})

	e.attack(t, "ChownToOwner symlinks leaving the root", func(t *testing.T) {
		rel, err := filepath.Rel(jr, victimSock)
		if err != nil {
			t.Fatal(err)
		}
		e.ownerSymlink(t, victimSock, filepath.Join(jr, "s-abs.sock"))
		e.ownerSymlink(t, rel, filepath.Join(jr, "s-rel.sock"))
		e.ownerSymlink(t, "s-abs.sock", filepath.Join(jr, "s-chain.sock"))
		e.ownerSymlink(t, shadow, filepath.Join(jr, "s-shadow"))
	}, func(t *testing.T) {
		for _, n := range []string{"s-abs.sock", "s-rel.sock", "s-chain.sock", "s-shadow"} {
			chown(t, filepath.Join(jr, n))
		}
	})

	e.attack(t, "ChownToOwner symlink loops", func(t *testing.T) {
		e.ownerSymlink(t, "loop-b", filepath.Join(jr, "loop-a"))
		e.ownerSymlink(t, "loop-a", filepath.Join(jr, "loop-b"))
		prev := "api.sock"
		for i := 0; i < 60; i++ {
			name := fmt.Sprintf("chain%02d", i)
			e.ownerSymlink(t, prev, filepath.Join(jr, name))
			prev = name
		}
	}, func(t *testing.T) {
		chown(t, filepath.Join(jr, "loop-a"))
		chown(t, filepath.Join(jr, "chain59"))
	})

	e.attack(t, "ChownToOwner hard links to root's files", func(t *testing.T) {
		hardlink(t, victimSock, filepath.Join(jr, "hl-root.sock"))
		hardlink(t, shadow, filepath.Join(jr, "hl-shadow"))
	}, func(t *testing.T) {
		chown(t, filepath.Join(jr, "hl-root.sock"))
		chown(t, filepath.Join(jr, "hl-shadow"))
	})

	e.attack(t, "ChownToOwner FIFOs, device nodes and files", func(t *testing.T) {
		mkfifo(t, filepath.Join(jr, "fifo"), e.ownerUID, e.ownerGID)
		mknod(t, filepath.Join(jr, "sda"), unix.S_IFBLK, 8, 0, 0, 0)
		mknod(t, filepath.Join(jr, "mem"), unix.S_IFCHR, 1, 1, e.ownerUID, e.ownerGID)
		mknod(t, filepath.Join(jr, "kmsg"), unix.S_IFCHR, 1, 11, 0, 0)
		if err := os.WriteFile(filepath.Join(jr, "rootfile"), []byte("root's"), 0o600); err != nil {
			t.Fatal(err)
		}
		e.ownerDir(t, filepath.Join(jr, "dir"))
	}, func(t *testing.T) {
		for _, n := range []string{"fifo", "sda", "mem", "kmsg", "rootfile", "dir"} {
			chown(t, filepath.Join(jr, n))
		}
	})

	e.attack(t, "ChownToOwner sockets of root and of another user", func(t *testing.T) {
		mksock(t, filepath.Join(jr, "root.sock"), 0, 0)
		mksock(t, filepath.Join(jr, "other.sock"), e.otherUID, e.otherGID)
	}, func(t *testing.T) {
		chown(t, filepath.Join(jr, "root.sock"))
		chown(t, filepath.Join(jr, "other.sock"))
	})

	e.attack(t, "ChownToOwner outside a jail's run directory", func(t *testing.T) {
		mksock(t, filepath.Join(run, "vm.sock"), 0, 0)
		mksock(t, filepath.Join(filepath.Dir(jr), "root.sock"), 0, 0)
	}, func(t *testing.T) {
		for _, p := range []string{
			filepath.Join(run, "vm.sock"), e.lay.ConfigPath(), e.lay.InstallMetadataPath(), e.lay.AuditLog(),
			filepath.Join(filepath.Dir(jr), "root.sock"), filepath.Join(e.root, "jail"),
			filepath.Join(e.root, "jail", jailExec, "vm1"), jr,
		} {
			chown(t, p)
		}
	})

	e.attack(t, "ChownToOwner through a jail run directory swapped for a symlink", func(t *testing.T) {
		r := e.jailRun(t, "vm2")
		if err := os.Remove(r); err != nil {
			t.Fatal(err)
		}
		e.ownerSymlink(t, e.victim, r)
	}, func(t *testing.T) {
		chown(t, filepath.Join(e.jailRunPath("vm2"), "root.sock"))
	})

	e.attack(t, "ChownToOwner socket swapped for a symlink during the call", func(t *testing.T) {
		e.ownerSymlink(t, victimSock, filepath.Join(jr, "race-alt"))
	}, func(t *testing.T) {
		target := filepath.Join(jr, "api.sock")
		acc, ref := race(t, target, filepath.Join(jr, "race-alt"), func() reply {
			return e.call(t, privileged.OpChownToOwner, privileged.ChownToOwnerRequest{Path: target})
		})
		if acc == 0 || ref == 0 {
			t.Errorf("%d accepted, %d refused: the race never showed the helper both the socket and the symlink", acc, ref)
		}
	})

	e.attack(t, "ChownToOwner run directory swapped for a symlink during the call", func(t *testing.T) {
		r := e.jailRun(t, "vm3")
		mksock(t, filepath.Join(r, "api.sock"), e.ownerUID, e.ownerGID)
		sockDir := filepath.Join(e.victim, "sockdir")
		if err := os.Mkdir(sockDir, 0o755); err != nil {
			t.Fatal(err)
		}
		mksock(t, filepath.Join(sockDir, "api.sock"), 0, 0)
		e.ownerSymlink(t, sockDir, filepath.Join(filepath.Dir(r), "alt"))
	}, func(t *testing.T) {
		r := e.jailRunPath("vm3")
		target := filepath.Join(r, "api.sock")
		acc, ref := race(t, r, filepath.Join(filepath.Dir(r), "alt"), func() reply {
			return e.call(t, privileged.OpChownToOwner, privileged.ChownToOwnerRequest{Path: target})
		})
		if acc == 0 || ref == 0 {
			t.Errorf("%d accepted, %d refused: the race never showed the helper both the directory and the symlink", acc, ref)
		}
	})

	e.attack(t, "LoopAttach lexical and symlink tricks", func(t *testing.T) {
		dir := e.ownerDir(t, filepath.Join(disks, "lvm"))
		e.ownerSymlink(t, vdisk, filepath.Join(dir, "abs.img"))
		rel, _ := filepath.Rel(dir, vdisk)
		e.ownerSymlink(t, rel, filepath.Join(dir, "rel.img"))
		e.ownerSymlink(t, e.victim, filepath.Join(disks, "victimdir"))
		e.ownerSymlink(t, "/proc/self/root"+vdisk, filepath.Join(dir, "proc.img"))
	}, func(t *testing.T) {
		dir := filepath.Join(disks, "lvm")
		for _, p := range []string{
			disks + "/../../.." + vdisk,
			disks + "//lvm/abs.img",
			dir + "/abs.img/",
			dir + "/abs.img\x00",
			filepath.Join(dir, "abs.img"), filepath.Join(dir, "rel.img"), filepath.Join(dir, "proc.img"),
			filepath.Join(disks, "victimdir", "disk.img"),
			"/proc/self/root" + vdisk,
			vdisk,
			"/dev/loop0",
			disks + strings.Repeat("/x", 20000),
			"",
		} {
			loop(t, p, true)
		}
	})

	e.attack(t, "LoopAttach hard link to root's image", func(t *testing.T) {
		hardlink(t, vdisk, filepath.Join(e.ownerDir(t, filepath.Join(disks, "lhl")), "disk.img"))
	}, func(t *testing.T) {
		loop(t, filepath.Join(disks, "lhl", "disk.img"), true)
		loop(t, filepath.Join(disks, "lhl", "disk.img"), false)
	})

	var foreignLoop string // a loop device over root's image, bound by "someone else"
	e.attack(t, "LoopAttach device nodes under state", func(t *testing.T) {
		dev, err := blockdev.LoopAttach(context.Background(), vdisk, true)
		if err != nil {
			t.Fatal(err)
		}
		foreignLoop = dev
		t.Cleanup(func() { _ = blockdev.LoopDetach(context.Background(), dev) })
		var st unix.Stat_t
		if err := unix.Stat(dev, &st); err != nil {
			t.Fatal(err)
		}
		dir := e.ownerDir(t, filepath.Join(disks, "ldev"))
		mknod(t, filepath.Join(dir, "sda.img"), unix.S_IFBLK, 8, 0, e.ownerUID, e.ownerGID)
		mknod(t, filepath.Join(dir, "loop.img"), unix.S_IFBLK, unix.Major(st.Rdev), unix.Minor(st.Rdev), e.ownerUID, e.ownerGID)
		mknod(t, filepath.Join(dir, "mem.img"), unix.S_IFCHR, 1, 1, e.ownerUID, e.ownerGID)
		e.ownerSymlink(t, dev, filepath.Join(dir, "devlink.img"))
	}, func(t *testing.T) {
		dir := filepath.Join(disks, "ldev")
		for _, n := range []string{"sda.img", "loop.img", "mem.img", "devlink.img"} {
			start := time.Now()
			refused(t, "LoopAttach "+n, e.call(t, privileged.OpLoopAttach, privileged.LoopAttachRequest{Path: filepath.Join(dir, n), ReadOnly: true}), privileged.CodeInvalid)
			quick(t, "LoopAttach", start)
		}
		refused(t, "LoopAttach "+foreignLoop, e.call(t, privileged.OpLoopAttach, privileged.LoopAttachRequest{Path: foreignLoop, ReadOnly: true}), privileged.CodeInvalid)
		if n := len(loopsOver(t, e.victim)); n != 1 {
			t.Errorf("%d loops over the victim's image, want only the test's own", n)
		}
	})

	e.attack(t, "LoopAttach another user's file and a FIFO", func(t *testing.T) {
		dir := e.ownerDir(t, filepath.Join(disks, "lother"))
		p := filepath.Join(dir, "other.img")
		if err := os.WriteFile(p, make([]byte, 4096), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, e.otherUID, e.otherGID); err != nil {
			t.Fatal(err)
		}
		mkfifo(t, filepath.Join(dir, "fifo.img"), e.ownerUID, e.ownerGID)
	}, func(t *testing.T) {
		dir := filepath.Join(disks, "lother")
		loop(t, filepath.Join(dir, "other.img"), true)
		loop(t, filepath.Join(dir, "fifo.img"), true)
		noLoopsOver(t, dir)
	})

	e.attack(t, "LoopAttach outside disks and images, and a base read-write", func(t *testing.T) {
		e.ownerFile(t, filepath.Join(images, "base.ext4"), 4096)
		e.ownerFile(t, filepath.Join(e.lay.StateDir, "banger.db.img"), 4096)
		e.ownerFile(t, filepath.Join(run, "run.img"), 4096)
	}, func(t *testing.T) {
		loop(t, filepath.Join(images, "base.ext4"), false)
		loop(t, filepath.Join(e.lay.StateDir, "banger.db.img"), true)
		loop(t, filepath.Join(run, "run.img"), true)
		loop(t, disks, true)
		loop(t, e.lay.ConfigPath(), true)
		noLoopsOver(t, e.root)
	})

	e.attack(t, "LoopAttach symlink swapped during the call", func(t *testing.T) {
		dir := e.ownerDir(t, filepath.Join(disks, "lrace"))
		e.ownerFile(t, filepath.Join(dir, "disk.img"), 1<<16)
		e.ownerSymlink(t, vdisk, filepath.Join(dir, "alt"))
	}, func(t *testing.T) {
		dir := filepath.Join(disks, "lrace")
		target := filepath.Join(dir, "disk.img")
		acc, ref := race(t, target, filepath.Join(dir, "alt"), func() reply {
			r := e.call(t, privileged.OpLoopAttach, privileged.LoopAttachRequest{Path: target, ReadOnly: true})
			if r.Status == http.StatusOK {
				// It bound the owner's own file: detach it as the owner, at once,
				// so that loops do not pile up.
				var resp privileged.LoopAttachResponse
				if err := json.Unmarshal(r.Body, &resp); err != nil {
					t.Errorf("LoopAttach answer %s: %v", r, err)
				} else {
					dev := resp.Device
					if d := e.call(t, privileged.OpLoopDetach, privileged.LoopDetachRequest{Device: dev}); d.Status != http.StatusOK {
						t.Errorf("detach %s, bound over the owner's file during the race: %s", dev, d)
					}
				}
			}
			return r
		})
		noLoopsOver(t, e.victim)
		if acc == 0 {
			t.Errorf("no call was accepted: the race never showed the helper the owner's file")
		}
		if ref == 0 {
			t.Errorf("no call was refused: the race never showed the helper the symlink")
		}
		noLoopsOver(t, e.root)
	})

	e.attack(t, "LoopAttach directory swapped for a symlink during the call", func(t *testing.T) {
		dir := e.ownerDir(t, filepath.Join(disks, "ldirrace"))
		e.ownerFile(t, filepath.Join(dir, "disk.img"), 1<<16)
		// The victim's directory holds a disk.img of root's under the same name.
		e.ownerSymlink(t, e.victim, filepath.Join(disks, "ldirrace-alt"))
	}, func(t *testing.T) {
		dir := filepath.Join(disks, "ldirrace")
		target := filepath.Join(dir, "disk.img")
		acc, ref := race(t, dir, filepath.Join(disks, "ldirrace-alt"), func() reply {
			r := e.call(t, privileged.OpLoopAttach, privileged.LoopAttachRequest{Path: target, ReadOnly: true})
			if r.Status == http.StatusOK {
				var resp privileged.LoopAttachResponse
				if err := json.Unmarshal(r.Body, &resp); err != nil {
					t.Errorf("LoopAttach answer %s: %v", r, err)
				} else {
					dev := resp.Device
					if d := e.call(t, privileged.OpLoopDetach, privileged.LoopDetachRequest{Device: dev}); d.Status != http.StatusOK {
						t.Errorf("detach %s, bound over the owner's file during the race: %s", dev, d)
					}
				}
			}
			return r
		})
		noLoopsOver(t, e.victim)
		if acc == 0 || ref == 0 {
			t.Errorf("%d accepted, %d refused: the race never showed the helper both the directory and the symlink", acc, ref)
		}
	})

	e.attack(t, "JailLaunch sources outside the root", func(t *testing.T) {
		dir := e.ownerDir(t, filepath.Join(images, "jout"))
		e.ownerSymlink(t, shadow, filepath.Join(dir, "vmlinux"))
		e.ownerSymlink(t, "/proc/self/root"+shadow, filepath.Join(dir, "proc"))
		e.ownerSymlink(t, e.victim, filepath.Join(disks, "jvictim"))
	}, func(t *testing.T) {
		dir := filepath.Join(images, "jout")
		for _, src := range []string{
			images + "/../../.." + shadow,
			filepath.Join(dir, "vmlinux"), filepath.Join(dir, "proc"),
			filepath.Join(disks, "jvictim", "disk.img"),
			shadow, "/proc/self/root" + shadow, fmt.Sprintf("/proc/%d/fd/0", e.helper),
			images + "//vmlinux", kernel + "\x00", kernel + "/",
			images + strings.Repeat("/k", 20000),
		} {
			jail(t, "kernel "+strconv.Quote(src), jailReq(src, rootfs, console))
			jail(t, "rootfs "+strconv.Quote(src), jailReq(kernel, src, console))
		}
		for _, src := range []string{"/dev/mapper/control", "/dev/mapper/vg0-root", "/dev/mapper/../sda", "/dev/sda", "/dev/loop0"} {
			jail(t, "rootfs "+src, jailReq(kernel, src, console))
		}
	})

	e.attack(t, "JailLaunch special files and another user's file", func(t *testing.T) {
		dir := e.ownerDir(t, filepath.Join(disks, "jspecial"))
		mkfifo(t, filepath.Join(dir, "fifo"), e.ownerUID, e.ownerGID)
		mknod(t, filepath.Join(dir, "sda"), unix.S_IFBLK, 8, 0, e.ownerUID, e.ownerGID)
		mknod(t, filepath.Join(dir, "mem"), unix.S_IFCHR, 1, 1, e.ownerUID, e.ownerGID)
		p := filepath.Join(dir, "other.ext4")
		if err := os.WriteFile(p, make([]byte, 4096), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, e.otherUID, e.otherGID); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T) {
		dir := filepath.Join(disks, "jspecial")
		for _, n := range []string{"fifo", "sda", "mem", "other.ext4"} {
			jail(t, "rootfs "+n, jailReq(kernel, filepath.Join(dir, n), console))
			jail(t, "kernel "+n, jailReq(filepath.Join(dir, n), rootfs, console))
		}
	})

	e.attack(t, "JailLaunch console log tricks", nil, func(t *testing.T) {
		// Each plant takes the place of the VM's own console log in turn.
		plants := map[string]func(){
			"symlink to shadow":      func() { e.ownerSymlink(t, shadow, console) },
			"hard link to passwd":    func() { hardlink(t, filepath.Join(e.victim, "passwd"), console) },
			"FIFO":                   func() { mkfifo(t, console, e.ownerUID, e.ownerGID) },
			"char device":            func() { mknod(t, console, unix.S_IFCHR, 1, 3, e.ownerUID, e.ownerGID) },
			"directory":              func() { e.ownerDir(t, console) },
			"root's file":            func() { mustWrite(t, console, "root's log") },
			"another user's file":    func() { mustWrite(t, console, "other's"); mustChown(t, console, e.otherUID, e.otherGID) },
			"symlink to audit log":   func() { e.ownerSymlink(t, e.lay.AuditLog(), console) },
			"symlink to config.toml": func() { e.ownerSymlink(t, e.lay.ConfigPath(), console) },
		}
		for name, plant := range plants {
			plant()
			jail(t, "console log: "+name, jailReq(kernel, rootfs, console))
			if err := os.RemoveAll(console); err != nil {
				t.Fatal(err)
			}
		}
		// logs/vms itself swapped for a symlink to a directory of root's.
		moved := vmLogs + ".moved"
		if err := os.Rename(vmLogs, moved); err != nil {
			t.Fatal(err)
		}
		e.ownerSymlink(t, filepath.Join(e.victim, "etc"), vmLogs)
		jail(t, "console log through logs/vms swapped for a symlink", jailReq(kernel, rootfs, console))
		if err := os.Remove(vmLogs); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(moved, vmLogs); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{
			vmLogs + "/../../../.." + shadow, vmLogs + "//jailvm.console.log", console + "/", console + "\x00",
			filepath.Join(vmLogs, "othervm.console.log"), filepath.Join(vmLogs, "j.console.log"), filepath.Join(vmLogs, ".console.log"),
			filepath.Join(e.lay.LogDir, "jailvm.console.log"), shadow, e.lay.ConfigPath(), e.lay.AuditLog(),
			vmLogs, "relative.log", "",
		} {
			jail(t, "console "+strconv.Quote(c), jailReq(kernel, rootfs, c))
		}
	})

	e.attack(t, "JailLaunch hard link to root's file as the root disk", func(t *testing.T) {
		hardlink(t, vdisk, filepath.Join(filepath.Dir(rootfs), "hl.ext4"))
		hardlink(t, shadow, filepath.Join(images, "hl-vmlinux"))
	}, func(t *testing.T) {
		jail(t, "writable hard-linked root disk", jailReq(kernel, filepath.Join(filepath.Dir(rootfs), "hl.ext4"), console))
		jail(t, "hard-linked kernel", jailReq(filepath.Join(images, "hl-vmlinux"), rootfs, console))
	})

	e.attack(t, "JailLaunch another VM's disk and files outside the VM's", func(t *testing.T) {
		e.ownerFile(t, filepath.Join(disks, "othervm", "rootfs.ext4"), 4096)
		e.ownerFile(t, filepath.Join(e.lay.StateDir, "loose.ext4"), 4096)
	}, func(t *testing.T) {
		jail(t, "another VM's root disk", jailReq(kernel, filepath.Join(disks, "othervm", "rootfs.ext4"), console))
		jail(t, "a file loose in state", jailReq(kernel, filepath.Join(e.lay.StateDir, "loose.ext4"), console))
		jail(t, "an image as the writable root disk", jailReq(kernel, kernel, console))
		jail(t, "config.toml as the kernel", jailReq(e.lay.ConfigPath(), rootfs, console))
		jail(t, "install.json as the kernel", jailReq(e.lay.InstallMetadataPath(), rootfs, console))
		jail(t, "the audit log as the kernel", jailReq(e.lay.AuditLog(), rootfs, console))
	})

	e.attack(t, "JailLaunch root disk swapped for a symlink during the call", func(t *testing.T) {
		// One launch first: it builds the jail base and the console log, as
		// every launch that passes the checks does; it then fails in the jailer.
		if r := e.call(t, privileged.OpJailLaunch, jailReq(kernel, rootfs, console)); !reachedJailer(r) {
			t.Fatalf("a valid JailLaunch: %s; want it to pass the checks and fail in the jailer (/usr/bin/false)", r)
		}
		e.ownerSymlink(t, vdisk, filepath.Join(filepath.Dir(rootfs), "alt"))
	}, func(t *testing.T) {
		acc, ref := raceWith(t, rootfs, filepath.Join(filepath.Dir(rootfs), "alt"), reachedJailer, func() reply {
			return e.call(t, privileged.OpJailLaunch, jailReq(kernel, rootfs, console))
		})
		if acc == 0 || ref == 0 {
			t.Errorf("%d reached the jailer, %d refused: the race never showed the helper both the disk and the symlink", acc, ref)
		}
	})

	e.attack(t, "JailLaunch console log swapped for a symlink during the call", func(t *testing.T) {
		// The VM's own console log exists (the race attack above left it, as a
		// launch does); its alternative is a symlink to root's file.
		if _, err := os.Lstat(console); err != nil {
			e.ownerFile(t, console, 0)
		}
		e.ownerSymlink(t, shadow, filepath.Join(vmLogs, "alt"))
	}, func(t *testing.T) {
		acc, ref := raceWith(t, console, filepath.Join(vmLogs, "alt"), reachedJailer, func() reply {
			return e.call(t, privileged.OpJailLaunch, jailReq(kernel, rootfs, console))
		})
		if acc == 0 || ref == 0 {
			t.Errorf("%d reached the jailer, %d refused: the race never showed the helper both the log and the symlink", acc, ref)
		}
	})

	e.attackWith(t, "JailRemove while the jail's run directory is swapped for a symlink", []string{filepath.Join(e.root, "jail")}, func(t *testing.T) {
		// A jail of the owner's, whose /run holds links to root's files, and an
		// alternative /run that is a symlink to root's directory.
		r := e.jailRun(t, "rmvm")
		e.ownerSymlink(t, shadow, filepath.Join(r, "shadow"))
		e.ownerSymlink(t, e.victim, filepath.Join(r, "victimdir"))
		e.ownerSymlink(t, e.victim, filepath.Join(filepath.Dir(r), "alt"))
	}, func(t *testing.T) {
		r := e.jailRunPath("rmvm")
		f := startFlipper(t, r, filepath.Join(filepath.Dir(r), "alt"))
		time.Sleep(50 * time.Millisecond)
		res := e.call(t, privileged.OpJailRemove, privileged.JailRemoveRequest{ID: "rmvm"})
		f.Stop()
		// Removing the owner's own jail is legitimate (and then the flipper, whose
		// names went with it, stops on an error, which is expected): what must not
		// happen is anything to the victims, watched, through the links or the swap.
		if res.Status != http.StatusOK {
			t.Errorf("JailRemove of the owner's stopped jail: %s", res)
		}
		if _, err := os.Lstat(filepath.Dir(filepath.Dir(r))); err == nil {
			t.Errorf("the jail %s is still there after JailRemove: the attack did not reach the removal", filepath.Dir(filepath.Dir(r)))
		}
	})

	e.attack(t, "JailLaunch argument injection", nil, func(t *testing.T) {
		base := jailReq(kernel, rootfs, console)
		mut := func(f func(r *privileged.JailLaunchRequest)) privileged.JailLaunchRequest {
			r := base
			r.Files = append([]privileged.JailFileSpec(nil), base.Files...)
			r.FirecrackerArgs = append([]string(nil), base.FirecrackerArgs...)
			f(&r)
			return r
		}
		cases := map[string]privileged.JailLaunchRequest{
			"id ..":          mut(func(r *privileged.JailLaunchRequest) { r.ID = "../../etc" }),
			"id slash":       mut(func(r *privileged.JailLaunchRequest) { r.ID = "a/b" }),
			"id upper":       mut(func(r *privileged.JailLaunchRequest) { r.ID = "VM" }),
			"id long":        mut(func(r *privileged.JailLaunchRequest) { r.ID = strings.Repeat("a", 65) }),
			"id empty":       mut(func(r *privileged.JailLaunchRequest) { r.ID = "" }),
			"cgroup cpuset":  mut(func(r *privileged.JailLaunchRequest) { r.Cgroups = []string{"cpuset.cpus=0"} }),
			"cgroup newline": mut(func(r *privileged.JailLaunchRequest) { r.Cgroups = []string{"memory.max=1\ncpu.max=1 1"} }),
			"cgroup procs":   mut(func(r *privileged.JailLaunchRequest) { r.Cgroups = []string{"cgroup.procs=1"} }),
			"fc config file": mut(func(r *privileged.JailLaunchRequest) {
				r.FirecrackerArgs = append(r.FirecrackerArgs, "--config-file", shadow)
			}),
			"fc api sock moved": mut(func(r *privileged.JailLaunchRequest) { r.FirecrackerArgs = []string{"--api-sock", shadow} }),
			"fc log path": mut(func(r *privileged.JailLaunchRequest) {
				r.FirecrackerArgs = append(r.FirecrackerArgs, "--log-path", shadow)
			}),
			"fc odd args": mut(func(r *privileged.JailLaunchRequest) { r.FirecrackerArgs = append(r.FirecrackerArgs, "--level") }),
			"fc level twice": mut(func(r *privileged.JailLaunchRequest) {
				r.FirecrackerArgs = append(r.FirecrackerArgs, "--level", "Info", "--level", "Debug")
			}),
			"fc no-seccomp": mut(func(r *privileged.JailLaunchRequest) {
				r.FirecrackerArgs = append(r.FirecrackerArgs, "--no-seccomp", "x")
			}),
			"dst etc":         mut(func(r *privileged.JailLaunchRequest) { r.Files[0].Dst = "/../../etc/passwd" }),
			"dst twice":       mut(func(r *privileged.JailLaunchRequest) { r.Files[1].Dst = privileged.JailDstKernel }),
			"kernel writable": mut(func(r *privileged.JailLaunchRequest) { r.Files[0].Writable = true }),
			"four files":      mut(func(r *privileged.JailLaunchRequest) { r.Files = append(r.Files, r.Files[0], r.Files[1]) }),
			"no files":        mut(func(r *privileged.JailLaunchRequest) { r.Files = nil }),
			"no rootfs":       mut(func(r *privileged.JailLaunchRequest) { r.Files = r.Files[:1] }),
			"initrd is shadow": mut(func(r *privileged.JailLaunchRequest) {
				r.Files = append(r.Files, privileged.JailFileSpec{Src: shadow, Dst: privileged.JailDstInitrd})
			}),
			"console under jail": mut(func(r *privileged.JailLaunchRequest) { r.ConsoleLog = filepath.Join(e.root, "jail", "x.log") }),
		}
		for name, req := range cases {
			jail(t, name, req)
		}
	})

	e.attack(t, "JailSignal and JailRemove tricks", nil, func(t *testing.T) {
		for _, id := range []string{"../../..", "..", "a/../../b", "", strings.Repeat("a", 65), "vm\x00", "/proc/" + strconv.Itoa(e.victimPID)} {
			refused(t, "JailSignal id "+strconv.Quote(id), e.call(t, privileged.OpJailSignal, privileged.JailSignalRequest{ID: id, Signal: "SIGKILL"}), privileged.CodeInvalid)
			refused(t, "JailRemove id "+strconv.Quote(id), e.call(t, privileged.OpJailRemove, privileged.JailRemoveRequest{ID: id}), privileged.CodeInvalid)
		}
		// A jail named like the victim's pid does not exist: signalling it is a no-op
		// (answered as success), and the victim, watched, must live on.
		if r := e.call(t, privileged.OpJailSignal, privileged.JailSignalRequest{ID: strconv.Itoa(e.victimPID), Signal: "SIGKILL"}); r.Trans != nil {
			t.Errorf("JailSignal of a jail named like the victim's pid: %v", r.Trans)
		}
		for _, sig := range []string{"SIGSTOP", "9", "sigkill", "SIGKILL ", "", "SIGUSR1", "SIGHUP"} {
			refused(t, "JailSignal signal "+strconv.Quote(sig), e.call(t, privileged.OpJailSignal, privileged.JailSignalRequest{ID: "jailvm", Signal: sig}), privileged.CodeInvalid)
		}
	})
}

// TestAttackOps points every op at what is not banger's: other users' loop devices,
// device-mapper devices and tables, interfaces and bridges in the helper's
// namespace, addresses that are not a guest's.
func TestAttackOps(t *testing.T) {
	e := newAttackEnv(t)
	vdisk := filepath.Join(e.victim, "disk.img")
	foreign, err := blockdev.LoopAttach(context.Background(), vdisk, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = blockdev.LoopDetach(context.Background(), foreign) })
	dmPrefix := privileged.DMPrefix(e.lay.DisksDir())
	otherPrefix := privileged.DMPrefix("/var/lib/banger/state/disks")
	loopStillThere := func(t *testing.T) {
		t.Helper()
		loops := loopsOver(t, e.victim)
		if len(loops) != 1 || loops[0].Device != foreign || loops[0].ReadOnly {
			t.Errorf("the foreign loop %s over %s: got %+v, want it bound, read-write, untouched", foreign, vdisk, loops)
		}
	}

	e.attack(t, "LoopDetach of a loop that is not banger's", nil, func(t *testing.T) {
		for _, dev := range []string{foreign, "/dev/loop-control", "/dev/../dev/" + filepath.Base(foreign), foreign + "p1", "/dev/sda", foreign + " ", ""} {
			refused(t, "LoopDetach "+strconv.Quote(dev), e.call(t, privileged.OpLoopDetach, privileged.LoopDetachRequest{Device: dev}), privileged.CodeInvalid)
		}
		loopStillThere(t)
	})

	e.attack(t, "LoopList hides other loops", nil, func(t *testing.T) {
		r := e.call(t, privileged.OpLoopList, privileged.LoopListRequest{})
		if r.Status != http.StatusOK {
			t.Fatalf("LoopList: %s", r)
		}
		if strings.Contains(string(r.Body), foreign) || strings.Contains(string(r.Body), e.victim) {
			t.Errorf("LoopList shows a loop that is not banger's: %s", r.Body)
		}
	})

	dmBefore := dmNames(t)
	e.attack(t, "DMCreate over devices that are not banger's", nil, func(t *testing.T) {
		cases := []privileged.DMCreateRequest{
			{Name: dmPrefix + "vm1.origin", Table: fmt.Sprintf("0 2048 linear %s 0\n2048 100 zero\n", foreign)},
			{Name: dmPrefix + "vm1", Table: fmt.Sprintf("0 2048 snapshot %s %s P 8\n", foreign, foreign)},
			{Name: dmPrefix + "vm1", Table: fmt.Sprintf("0 2048 snapshot /dev/loop0 %s P 8\n", foreign)},
			{Name: dmPrefix + "vm1", Table: fmt.Sprintf("0 2048 linear %s 0\n", foreign)},
			{Name: dmPrefix + "vm1", Table: fmt.Sprintf("0 2048 crypt aes-xts-plain64 00 0 %s 0\n", foreign)},
			{Name: dmPrefix + "vm1", Table: "0 2048 linear /dev/sda 0\n"},
			{Name: dmPrefix + "vm1", Table: fmt.Sprintf("0 2048 snapshot /dev/mapper/vg0-root %s P 8\n", foreign)},
			{Name: dmPrefix + "vm1.origin", Table: fmt.Sprintf("0 2048 linear %s 0\n2048 100 zero\n0 1 linear /dev/sda 0", foreign)},
			{Name: dmPrefix + "vm1", Table: fmt.Sprintf("0 2048 snapshot %s %s P 8\n", "/dev/loop0", "/dev/loop1") + strings.Repeat("x", 2000)},
			{Name: otherPrefix + "vm1", Table: fmt.Sprintf("0 2048 snapshot %s %s P 8\n", "/dev/loop0", "/dev/loop1")},
			{Name: "vg0-root", Table: fmt.Sprintf("0 2048 linear %s 0\n", foreign)},
			{Name: dmPrefix + "../vm1", Table: "0 1 zero\n"},
			{Name: dmPrefix + "vm1", Table: "0 1 zero\n"},
			{Name: dmPrefix + "vm1", Table: ""},
		}
		for _, c := range cases {
			refused(t, fmt.Sprintf("DMCreate %q %q", c.Name, c.Table), e.call(t, privileged.OpDMCreate, c), privileged.CodeInvalid)
		}
		if after := dmNames(t); after != dmBefore {
			t.Errorf("device-mapper devices changed: %q, were %q", after, dmBefore)
		}
		loopStillThere(t)
	})

	e.attack(t, "DMRemove of names that are not this root's", nil, func(t *testing.T) {
		for _, n := range []string{"vg0-root", otherPrefix + "vm1", dmPrefix, dmPrefix + "../x", dmPrefix + "vm/../../x", "control", "", dmPrefix + "vm1\x00"} {
			refused(t, "DMRemove "+strconv.Quote(n), e.call(t, privileged.OpDMRemove, privileged.DMRemoveRequest{Name: n}), privileged.CodeInvalid)
		}
		if after := dmNames(t); after != dmBefore {
			t.Errorf("device-mapper devices changed: %q, were %q", after, dmBefore)
		}
	})

	e.attack(t, "DeleteTap of interfaces that are not taps", nil, func(t *testing.T) {
		for _, n := range []string{victimVeth, victimBridge, victimTap, "lo", atkBridge, "tap-pool-0;ip link del lo", "tap-pool-", "tap-pool-01", "tap-vm-", "tap-vm-XYZ", "tap-pool-1234567", "../tap-pool-0", ""} {
			refused(t, "DeleteTap "+strconv.Quote(n), e.call(t, privileged.OpDeleteTap, privileged.DeleteTapRequest{Name: n}), privileged.CodeInvalid)
		}
	})

	e.attack(t, "tap ops on tap-named interfaces that are not banger's", nil, func(t *testing.T) {
		for _, n := range []string{foreignPoolTap, ownerOffBridgeTap, vethPoolName} {
			refused(t, "DeleteTap "+n, e.call(t, privileged.OpDeleteTap, privileged.DeleteTapRequest{Name: n}))
			refused(t, "CreateTap over "+n, e.call(t, privileged.OpCreateTap, privileged.CreateTapRequest{Name: n, Bridge: atkBridge}))
			refused(t, "EnsureNAT on "+n, e.call(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: netip.MustParseAddr("10.213.9.6"), MAC: "02:42:0a:d5:09:06", Tap: n, Enable: true}))
		}
	})

	e.attack(t, "CreateTap on another bridge or over an interface", nil, func(t *testing.T) {
		for _, c := range []privileged.CreateTapRequest{
			{Name: "tap-pool-1", Bridge: victimBridge},
			{Name: "tap-pool-1", Bridge: "lo"},
			{Name: "tap-pool-1", Bridge: ""},
			{Name: victimTap, Bridge: atkBridge},
			{Name: victimVeth, Bridge: atkBridge},
			{Name: atkBridge, Bridge: atkBridge},
		} {
			refused(t, fmt.Sprintf("CreateTap %+v", c), e.call(t, privileged.OpCreateTap, c), privileged.CodeInvalid)
		}
	})

	e.attack(t, "EnsureBridge and RemoveNetwork on a bridge that is not banger's", nil, func(t *testing.T) {
		victimPrefix := netip.MustParsePrefix(victimBridgeAddr)
		for _, c := range []privileged.EnsureBridgeRequest{
			{Name: victimBridge, Address: victimPrefix, MTU: atkMTU},
			{Name: victimBridge, Address: atkPrefix, MTU: atkMTU},
			{Name: atkBridge, Address: victimPrefix, MTU: atkMTU},
			{Name: atkBridge, Address: netip.MustParsePrefix("10.213.9.1/16"), MTU: atkMTU},
			{Name: atkBridge, Address: atkPrefix, MTU: 100},
			{Name: atkBridge, Address: atkPrefix, MTU: 65536},
			{Name: "lo", Address: atkPrefix, MTU: atkMTU},
			{Name: victimVeth, Address: atkPrefix, MTU: atkMTU},
		} {
			refused(t, fmt.Sprintf("EnsureBridge %+v", c), e.call(t, privileged.OpEnsureBridge, c), privileged.CodeInvalid)
		}
		for _, b := range []string{victimBridge, "lo", victimVeth, "", atkBridge + " "} {
			refused(t, "RemoveNetwork "+strconv.Quote(b), e.call(t, privileged.OpRemoveNetwork, privileged.RemoveNetworkRequest{Bridge: b}), privileged.CodeInvalid)
		}
	})

	e.attack(t, "EnsureNAT for addresses that are not a guest's", nil, func(t *testing.T) {
		for _, a := range []string{"10.213.9.0", "10.213.9.1", "10.213.9.255", "10.77.0.5", "8.8.8.8", "169.254.169.254", "127.0.0.1", "0.0.0.0", "255.255.255.255", "::ffff:10.213.9.5", "fe80::1"} {
			for _, enable := range []bool{true, false} {
				refused(t, fmt.Sprintf("EnsureNAT %s enable=%v", a, enable),
					e.call(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: netip.MustParseAddr(a), MAC: atkGuestMAC, Tap: "tap-pool-0", Enable: enable}), privileged.CodeInvalid)
			}
		}
		for _, tap := range []string{victimTap, victimVeth, victimBridge, ""} {
			refused(t, "EnsureNAT tap "+strconv.Quote(tap),
				e.call(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{GuestIP: atkGuest, MAC: atkGuestMAC, Tap: tap, Enable: true}), privileged.CodeInvalid)
		}
		refused(t, "EnsureNAT without an address", e.call(t, privileged.OpEnsureNAT, privileged.EnsureNATRequest{Tap: "tap-pool-0", Enable: true}), privileged.CodeInvalid)
	})

	e.attack(t, "ResolverRouting to a server or bridge that is not banger's", nil, func(t *testing.T) {
		for _, c := range []privileged.ResolverRoutingRequest{
			{Enable: true, Bridge: victimBridge, Domain: "vm", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("10.77.0.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("8.8.8.8:53")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("[::1]:53")},
			{Enable: true, Bridge: atkBridge, Domain: "vm", DNS: netip.MustParseAddrPort("10.213.9.1:0")},
			{Enable: true, Bridge: atkBridge, Domain: "", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: ".", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "VM", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "vm\x00.com", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "~.", DNS: netip.MustParseAddrPort("10.213.9.1:53")},
			{Enable: true, Bridge: atkBridge, Domain: "vm"},
			{Enable: false, Bridge: victimBridge},
		} {
			refused(t, fmt.Sprintf("ResolverRouting %+v", c), e.call(t, privileged.OpResolverRouting, c), privileged.CodeInvalid)
		}
	})
}

// dmNames lists the host's device-mapper devices ("" where dmsetup cannot), to show
// that no attack made or removed one.
func dmNames(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		return ""
	}
	out, err := exec.Command("dmsetup", "ls").CombinedOutput()
	if err != nil {
		return "dmsetup ls: " + strings.TrimSpace(string(out))
	}
	return string(out)
}
