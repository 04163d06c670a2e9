package jailhelper_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/consolelog"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/testutil"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
	"banger/internal/vmm/firecracker/jailhelper"
	"banger/internal/vmm/process"
)

// clientModeEnv makes the test binary run clientMain: the owner's side of
// TestHelperJailLifecycle, as the unprivileged owner (the helper answers no one else,
// and the jail's firecracker must not run as root).
const clientModeEnv = "JAILHELPER_CLIENT"

// The client's arguments, by environment.
const (
	clientRootEnv = "JAILHELPER_ROOT"
	clientExecEnv = "JAILHELPER_EXEC" // the helper's firecracker binary
)

const jailID = "e2e1"

// TestHelperJailLifecycle runs the real banger-helper, as root, configured with this
// test binary as its jailer and firecracker (fctest's fakes), and drives a jail's
// whole life through it as the unprivileged owner, with the Client bangerd uses:
// JailLaunch → the fake firecracker answering on its API socket (shared through
// ChownToOwner) → JailRemove refused while it runs → JailSignal SIGTERM → JailRemove.
func TestHelperJailLifecycle(t *testing.T) {
	testutil.RequireRoot(t, "ip", "useradd")
	owner := testutil.User(t)
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	root := testutil.Root(t)
	lay, err := layout.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := lay.Create(uid, gid); err != nil {
		t.Fatal(err)
	}
	// The fakes: copies of this binary named as the real ones, readable by all.
	bin := filepath.Join(root, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	jailer, fc := filepath.Join(bin, "jailer"), filepath.Join(bin, "firecracker")
	for _, p := range []string{jailer, fc} {
		copySelf(t, p)
	}
	config := fmt.Sprintf("[vmm]\njailer = %q\nfirecracker = %q\n", jailer, fc)
	if err := os.WriteFile(lay.ConfigPath(), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(lay.ImagesDir(), "vmlinux"), filepath.Join(lay.DisksDir(), jailID, "vm.ext4")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Dir(f), uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(f, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	// The helper runs the fake jailer with its own environment: make it the fake's.
	spec, err := fctest.FindSpec(fctest.SpecV1161)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fctest.FakeModeEnv, "jailer")
	t.Setenv(fctest.FakeSpecEnv, spec)
	// Firecracker runs as the owner, as under the real jailer: its sockets are then
	// the owner's, the only ones ChownToOwner hands over.
	t.Setenv(fctest.FakeSwitchUIDEnv, "1")
	// The jailed firecracker is orphaned when the jailer exits; adopt it to reap it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		killJail(lay)
	})
	startHelper(t, lay, uid, gid)
	os.Unsetenv(fctest.FakeModeEnv) // t.Setenv restores it at the end; the client is no fake

	self := filepath.Join(bin, "client")
	copySelf(t, self)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), clientModeEnv+"=1", clientRootEnv+"="+root, clientExecEnv+"="+fc)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		helperLog, _ := os.ReadFile(filepath.Join(root, "helper-test.log"))
		t.Fatalf("owner's side: %v\n%s\nhelper log:\n%s", err, out, helperLog)
	}
	t.Logf("owner's side:\n%s", out)
	if _, err := os.Stat(filepath.Join(privileged.JailBase(lay), "firecracker", jailID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("jail after JailRemove: got %v, want it gone", err)
	}
	// The console log is where bangerd reads it, made by the helper for the owner; the
	// placed files kept their owner.
	for _, f := range []string{filepath.Join(lay.LogDir, "vms", jailID+".console.log"), filepath.Join(lay.DisksDir(), jailID, "vm.ext4"), filepath.Join(lay.ImagesDir(), "vmlinux")} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != gid || st.Nlink != 1 {
			t.Errorf("%s: owner %d:%d, %d links; want the owner's %d:%d, one link", f, st.Uid, st.Gid, st.Nlink, uid, gid)
		}
	}
	// What the jailed Firecracker printed reached the log through the helper's capped
	// logger (running as the owner), as the guest's console would.
	consoleLog := filepath.Join(lay.LogDir, "vms", jailID+".console.log")
	consolelog.Settle(consoleLog, 10*time.Second)
	if b, err := consolelog.Tail(consoleLog, 4096); err != nil || !strings.Contains(string(b), "jailer (fctest): starting") {
		t.Errorf("console log %s = %q, %v; want the jailed firecracker's output", consoleLog, b, err)
	}
	audit, err := os.ReadFile(lay.AuditLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{privileged.OpJailLaunch, privileged.OpJailSignal, privileged.OpJailRemove, privileged.OpChownToOwner} {
		if !strings.Contains(string(audit), op) {
			t.Errorf("audit log lacks %s:\n%s", op, audit)
		}
	}
}

// clientMain is the owner's side: bangerd's JailOps, through the helper.
func clientMain() int {
	if err := runClient(); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	return 0
}

func runClient() error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	lay, err := layout.New(os.Getenv(clientRootEnv))
	if err != nil {
		return err
	}
	base := privileged.JailBase(lay)
	ops := jailhelper.NewClient(privileged.NewClient(lay.HelperSocket()), base)
	j := firecracker.Jailer{
		Binary: "unused", ExecFile: os.Getenv(clientExecEnv), ID: jailID,
		UID: os.Getuid(), GID: os.Getgid(), ChrootBaseDir: base,
		Cgroups:     []string{firecracker.CPUMax(1)},
		KeepStdio:   true,
		Firecracker: firecracker.Firecracker{LogPath: firecracker.JailLog, Level: "Info"},
	}
	console := filepath.Join(lay.LogDir, "vms", jailID+".console.log")
	if err := os.MkdirAll(filepath.Dir(console), 0o750); err != nil {
		return err
	}
	pid, err := ops.Launch(ctx, firecracker.JailLaunch{Jailer: j, ConsoleLog: console, Files: []firecracker.JailFile{
		{Src: filepath.Join(lay.ImagesDir(), "vmlinux"), Dst: firecracker.JailKernel},
		{Src: filepath.Join(lay.DisksDir(), jailID, "vm.ext4"), Dst: firecracker.JailRootfs, Writable: true},
	}})
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	ref, err := process.Find(pid)
	if err != nil {
		return fmt.Errorf("pid %d from JailLaunch: %w", pid, err)
	}
	fmt.Printf("launched pid %d\n", pid)
	disk, err := os.Stat(filepath.Join(lay.DisksDir(), jailID, "vm.ext4"))
	if err != nil {
		return err
	}
	if placed, err := os.Stat(j.HostPath(firecracker.JailRootfs)); err != nil || !os.SameFile(disk, placed) {
		return fmt.Errorf("root disk in the jail: got %v, %v; want a hard link of the disk", placed, err)
	}
	sock := j.APISocketHostPath()
	if err := waitFor(ctx, sock); err != nil {
		return err
	}
	if err := ops.Share(ctx, sock); err != nil {
		return fmt.Errorf("share %s: %w", sock, err)
	}
	c := firecracker.NewClient(sock)
	defer c.Close()
	if err := c.WaitReady(ctx, nil); err != nil {
		return fmt.Errorf("API socket: %w", err)
	}
	info, err := c.InstanceInfo(ctx)
	if err != nil || info.ID != jailID {
		return fmt.Errorf("instance info: got %+v, %v; want id %s", info, err, jailID)
	}
	fmt.Printf("firecracker answers as %s\n", info.ID)

	var we *privileged.Error
	if err := ops.Remove(ctx, j); !errors.As(err, &we) || we.Code != privileged.CodeInvalid {
		return fmt.Errorf("remove while running: got %v, want a refusal with code %s", err, privileged.CodeInvalid)
	}
	if _, err := os.Stat(sock); err != nil {
		return fmt.Errorf("the refused remove removed something: %w", err)
	}
	if err := ops.Signal(ctx, ref, unix.SIGSTOP); err == nil {
		return errors.New("SIGSTOP: got success, want a refusal")
	}
	if err := ops.Signal(ctx, ref, unix.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	if err := process.Wait(ctx, ref); err != nil {
		return fmt.Errorf("firecracker after SIGTERM: %w", err)
	}
	if err := ops.Signal(ctx, ref, unix.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM to a gone firecracker: got %w, want no error", err)
	}
	if err := ops.Remove(ctx, j); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	fmt.Println("removed")
	return nil
}

func waitFor(ctx context.Context, path string) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Lstat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no API socket at %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// startHelper runs the real banger-helper for owner uid:gid in a fresh network
// namespace (it makes no interface here, but must never touch the host's).
func startHelper(t *testing.T, lay layout.Layout, uid, gid int) {
	t.Helper()
	ns := testutil.NetNS(t)
	helper := testutil.Binary(t, "banger-helper")
	logf, err := os.Create(filepath.Join(lay.Root, "helper-test.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, helper, "--root", lay.Root,
		"--owner-uid", strconv.Itoa(uid), "--owner-gid", strconv.Itoa(gid))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(lay.HelperSocket()); err == nil && fi.Mode().Type() == fs.ModeSocket {
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("banger-helper made no socket:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killJail kills a firecracker the test left in its jail, and reaps what it adopted.
func killJail(lay layout.Layout) {
	pidFile := filepath.Join(privileged.JailBase(lay), "firecracker", jailID, "root", "firecracker.pid")
	if data, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			if ref, err := process.Find(pid); err == nil {
				_ = process.Kill(ref)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil || pid == 0 {
			if pid == 0 {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			return
		}
	}
}

func copySelf(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
