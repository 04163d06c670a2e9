package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent/proto"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// JailerOptions run every VM under Firecracker's jailer: a chroot of its
// own, an unprivileged uid and gid, cgroup v2 limits (cpu.max from the VM's
// vCPUs, plus Cgroups), its own PID namespace and optionally a network
// namespace. Firecracker keeps the jailer's stdout (no --daemonize: see
// Jailer.KeepStdio), so the guest's console still reaches Spec.ConsoleLog.
//
// The jailer needs root; bangerd does not have it. Its root-only steps go
// through Ops, which bangerd implements with banger-helper (see JailOps).
type JailerOptions struct {
	Binary string // default DefaultJailerBinary
	// ChrootBase is --chroot-base-dir (default DefaultChrootBase). It must be
	// on the filesystem that holds the VMs' disks (they are hard-linked in),
	// short (the vsock socket's host path, <base>/firecracker/<id>/root/run/
	// vsock.sock_<port>, must fit in 107 bytes), and, through banger-helper,
	// privileged.JailBase of the layout: the helper builds jails there only, and
	// its ChownToOwner accepts only sockets in a jail's run/ there.
	ChrootBase string
	// UID and GID Firecracker runs as; not 0. GID should be a group of
	// banger's owner: the jail's /run, where Firecracker makes its sockets,
	// is mode 0750 UID:GID, and the owner must pass through it to reach them.
	UID, GID int
	// NetNS is a network namespace under /var/run/netns; "" keeps the host's.
	NetNS string
	// Cgroups are further --cgroup values ("memory.max=...").
	Cgroups []string
	// Ops does the root-only steps. Nil: LocalJailOps{}, which needs this
	// process to be root.
	Ops JailOps
}

// JailOps are the steps of the jailer path that need root. Every method
// gets a jail the driver built from its options and the VM's id.
//
// bangerd implements them with banger-helper, which must hold each request
// to its own configuration (the jailer binary, chroot base, uid and gid are
// the helper's, never the caller's; the id is a banger VM id; files are under
// banger's root):
//
//	Launch   PrepareChroot, then the jailer in a session of its own with its
//	         stdout and stderr appended to the console log (a file under
//	         banger's root), and the PID from its PID file (LaunchJailed)
//	Share    the ChownToOwner op, which takes only sockets in a jail's /run
//	Signal   signal the jailed Firecracker, which runs as another user;
//	         pidfd-checked against the Ref's start time
//	Remove   RemoveJail, once Firecracker has exited
type JailOps interface {
	// Launch prepares the jail with files and starts the jailer; it returns
	// Firecracker's host PID once the jailer has handed over. On failure it
	// leaves nothing running.
	Launch(ctx context.Context, l JailLaunch) (pid int, err error)
	// Share makes a socket the jailed Firecracker created (its API socket,
	// then the vsock socket) usable by the driver's user.
	Share(ctx context.Context, path string) error
	// Signal sends sig to the process r names; a process gone is no error.
	Signal(ctx context.Context, r process.Ref, sig unix.Signal) error
	// Remove deletes the jail (Jailer.RemoveJail).
	Remove(ctx context.Context, j Jailer) error
}

// JailLaunch is one jailed start.
type JailLaunch struct {
	Jailer Jailer
	Files  []JailFile
	// ConsoleLog receives the jailer's, and so Firecracker's, stdout and
	// stderr: the guest's serial console. Through banger-helper it must be the
	// VM's own, logs/vms/<short id>.console.log, and is created for the owner or
	// appended to, never truncated: the caller removes an old one first.
	ConsoleLog string
}

// LocalJailOps does the jailer's root-only steps in this process, which must
// be root (tests, or a bangerd run as root).
type LocalJailOps struct {
	// Env is the jailer's environment; nil inherits ours. Tests point it at
	// a fake jailer.
	Env []string
}

var _ JailOps = LocalJailOps{}

// Launch implements JailOps.
func (o LocalJailOps) Launch(ctx context.Context, l JailLaunch) (int, error) {
	if err := l.Jailer.PrepareChroot(l.Files); err != nil {
		_ = l.Jailer.RemoveJail()
		return 0, err
	}
	out, err := os.OpenFile(l.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		_ = l.Jailer.RemoveJail()
		return 0, fmt.Errorf("console log: %w", err)
	}
	defer out.Close()
	pid, err := LaunchJailed(ctx, l.Jailer, LaunchOptions{Stdout: out, Stderr: out, Env: o.Env})
	if err != nil {
		_ = l.Jailer.RemoveJail()
		return 0, err
	}
	return pid, nil
}

// Share implements JailOps: the socket goes to this process's uid and gid.
func (LocalJailOps) Share(_ context.Context, path string) error {
	if err := os.Chown(path, os.Getuid(), os.Getgid()); err != nil {
		return fmt.Errorf("share %s: %w", path, err)
	}
	return nil
}

// Signal implements JailOps.
func (LocalJailOps) Signal(_ context.Context, r process.Ref, sig unix.Signal) error {
	return process.Signal(r, sig)
}

// Remove implements JailOps.
func (LocalJailOps) Remove(_ context.Context, j Jailer) error { return j.RemoveJail() }

// jailAvailable is Available under the jailer.
func (d *Driver) jailAvailable(ctx context.Context) error {
	jo := d.o.Jailer
	if _, local := jo.Ops.(LocalJailOps); local && os.Geteuid() != 0 {
		return fmt.Errorf("%w: the jailer needs root (chroot, uid switch, cgroups) and no privileged helper was given: run firecracker without the jailer, or through banger-helper", vmm.ErrUnavailable)
	}
	if _, err := d.execFile(); err != nil {
		return fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	path, err := exec.LookPath(jo.Binary)
	if err != nil {
		return fmt.Errorf("%w: %s not found: install the jailer that comes with Firecracker, or set vmm.jailer in config.toml", vmm.ErrUnavailable, jo.Binary)
	}
	_, err = d.version(ctx, path, "Jailer")
	return err
}

// execFile is the firecracker binary's absolute path with symlinks resolved (the
// jailer's --exec-file): banger-helper resolves its own the same way
// (trustfs.OpenBinary), and the jail directory is named after it, so both sides
// agree on every jail path.
func (d *Driver) execFile() (string, error) {
	p, err := exec.LookPath(d.o.Binary)
	if err != nil {
		return "", fmt.Errorf("%s not found: install Firecracker or set vmm.firecracker in config.toml", d.o.Binary)
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

// jailer is the jail of the VM with instance id id.
func (d *Driver) jailer(id, execFile string, cpus int) Jailer {
	jo := d.o.Jailer
	return Jailer{
		Binary: jo.Binary, ExecFile: execFile, ID: id, UID: jo.UID, GID: jo.GID,
		ChrootBaseDir: jo.ChrootBase, NetNS: jo.NetNS,
		Cgroups:     append([]string{CPUMax(cpus)}, jo.Cgroups...),
		KeepStdio:   true,
		Firecracker: Firecracker{LogPath: JailLog, Level: d.o.LogLevel},
	}
}

// jailOf finds the jail of a Handle from its API socket's path,
// <base>/<exec file name>/<id>/root/run/firecracker.socket: enough to signal
// through the jail's ops and remove the jail, from the Handle alone.
func (d *Driver) jailOf(h vmm.Handle) (Jailer, bool) {
	if d.o.Jailer == nil || h.APISocket == "" {
		return Jailer{}, false
	}
	rel, err := filepath.Rel(d.o.Jailer.ChrootBase, h.APISocket)
	if err != nil {
		return Jailer{}, false
	}
	parts := strings.SplitN(rel, string(filepath.Separator), 3)
	if len(parts) != 3 || parts[0] == ".." || parts[2] != filepath.Join("root", JailAPISocket) {
		return Jailer{}, false
	}
	if ValidateInstanceID(parts[1]) != nil {
		return Jailer{}, false
	}
	j := d.jailer(parts[1], "/"+parts[0], 1)
	if j.APISocketHostPath() != h.APISocket || j.HostPath(JailVsockSocket) != h.AgentSocket {
		return Jailer{}, false
	}
	return j, true
}

// startJailed is Start under the jailer: the jail is built and the jailer
// run through the ops; the sockets, made by Firecracker as the jail's user,
// are shared with the driver's user before it uses them.
func (d *Driver) startJailed(ctx context.Context, spec vmm.Spec, args string) (vmm.Handle, error) {
	exe, err := d.execFile()
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
	}
	j := d.jailer(InstanceID(spec.ID), exe, spec.CPUs)
	if err := j.Validate(); err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
	}
	ops := d.o.Jailer.Ops
	h := vmm.Handle{
		Driver:      DriverName,
		APISocket:   j.APISocketHostPath(),
		AgentSocket: j.HostPath(JailVsockSocket),
		AgentPort:   proto.DefaultVsockPort,
		ConsoleLog:  spec.ConsoleLog,
	}
	if socketLive(h.APISocket) {
		return vmm.Handle{}, fmt.Errorf("firecracker: jail %s is in use by a running firecracker: stop it first", j.JailDir())
	}
	// A jail left by a Firecracker that died without its Stop.
	if err := ops.Remove(ctx, j); err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: stale jail: %w", err)
	}
	files := []JailFile{
		{Src: spec.Kernel, Dst: JailKernel},
		{Src: spec.Root.Path, Dst: JailRootfs, Writable: !spec.Root.ReadOnly},
	}
	paths := vmPaths{kernel: JailKernel, root: JailRootfs, vsock: JailVsockSocket}
	if spec.Initrd != "" {
		files = append(files, JailFile{Src: spec.Initrd, Dst: JailInitrd})
		paths.initrd = JailInitrd
	}
	d.log.Info("starting firecracker under the jailer", "vm", spec.ID, "jail", j.JailDir(), "boot_args", args)
	pid, err := ops.Launch(ctx, JailLaunch{Jailer: j, Files: files, ConsoleLog: spec.ConsoleLog})
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w%s", err, logTails("", spec.ConsoleLog))
	}
	h.PID = pid
	ref, err := process.Find(pid)
	if err != nil {
		tails := logTails(j.HostPath(JailLog), spec.ConsoleLog)
		d.abort(h)
		return vmm.Handle{}, fmt.Errorf("firecracker: pid %d from the jailer exited at once: %w%s", pid, err, tails)
	}
	h.PIDStart = ref.Start

	wctx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	exited := make(chan struct{})
	go func() {
		if process.Wait(wctx, ref) == nil {
			close(exited)
		}
	}()
	c := NewClient(h.APISocket)
	defer c.Close()
	m := NewMachine(MachineDeps{Client: c, ChrootDir: j.ChrootDir(), Logger: d.log})
	err = waitSocket(ctx, h.APISocket, exited)
	if err == nil {
		err = ops.Share(ctx, h.APISocket)
	}
	if err == nil {
		err = d.boot(ctx, m, exited, machineSpec(spec, args, paths), func(ctx context.Context) error {
			return ops.Share(ctx, h.AgentSocket)
		})
	}
	if err != nil {
		tails := logTails(j.HostPath(JailLog), spec.ConsoleLog) // before the jail goes
		d.abort(h)
		return vmm.Handle{}, fmt.Errorf("firecracker: %w%s", err, tails)
	}
	d.log.Info("firecracker running", "vm", spec.ID, "pid", h.PID, "jail", j.JailDir())
	return h, nil
}

// waitSocket waits for Firecracker to create its API socket: it must be
// shared before the driver's user can connect to it, and Firecracker gives
// no other sign that it exists.
func waitSocket(ctx context.Context, path string, exited <-chan struct{}) error {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		_, err := os.Lstat(path)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("API socket: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker made no API socket at %s: %w", path, ctx.Err())
		case <-exited:
			return fmt.Errorf("firecracker exited before making its API socket at %s (see its log)", path)
		case <-t.C:
		}
	}
}
