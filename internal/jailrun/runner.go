package jailrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/privileged"
	"banger/internal/trustfs"
	"banger/internal/vmm/process"
)

// Runner is banger-helper's privileged.JailRuntime: every jail it builds uses its
// own binaries, chroot base and uid/gid, whatever the request.
//
// The jailer and firecracker binaries are resolved once, at start, and must be
// root's, writable by root only, in directories only root can change
// (trustfs.OpenBinary): otherwise anyone who could write one would have root run
// it. The jailer is executed through its pinned descriptor; firecracker, which
// the jailer copies into the jail by name, is re-checked before every launch
// (trustfs.Binary.Verify), its path then naming the checked file.
type Runner struct {
	jailer, fc *trustfs.Binary // both nil when missing is set
	// missing, when not empty, says why there are no usable binaries: Launch
	// answers it (Signal and Remove still work, to clean up old jails).
	missing string
	base    string // privileged.JailBase of the helper's layout
	uid     int    // the owner's: firecracker runs as the owner
	gid     int
	// env is the jailer's environment; nil inherits the helper's.
	env []string
}

var _ privileged.JailRuntime = (*Runner)(nil)

// Options configure New.
type Options struct {
	// Jailer and Firecracker are vmm.jailer and vmm.firecracker of the helper's
	// config.toml: paths, or names looked up in $PATH.
	Jailer, Firecracker string
	// ChrootBase is privileged.JailBase of the helper's layout.
	ChrootBase string
	// UID and GID are the owner's.
	UID, GID int
	// Env is the jailer's environment; nil inherits the helper's (tests point it
	// at a fake jailer).
	Env []string
}

// New resolves and checks the binaries. It never fails: a missing or untrusted
// binary makes a Runner whose Launch refuses with the reason (Missing), so that
// the helper's other ops keep working.
func New(o Options) *Runner {
	r := &Runner{base: o.ChrootBase, uid: o.UID, gid: o.GID, env: o.Env}
	j, err := trustfs.OpenBinary(o.Jailer)
	if err != nil {
		r.missing = fmt.Sprintf("jail ops unavailable: jailer %q: %v: install the jailer that comes with Firecracker root-owned (e.g. /usr/local/bin), or fix vmm.jailer in config.toml, then restart banger-helper", o.Jailer, err)
		return r
	}
	fc, err := trustfs.OpenBinary(o.Firecracker)
	if err != nil {
		j.Close()
		r.missing = fmt.Sprintf("jail ops unavailable: firecracker %q: %v: install Firecracker root-owned (e.g. /usr/local/bin), or fix vmm.firecracker in config.toml, then restart banger-helper", o.Firecracker, err)
		return r
	}
	r.jailer, r.fc = j, fc
	return r
}

// Missing is why Launch refuses, "" when the binaries passed the checks.
func (r *Runner) Missing() string { return r.missing }

// LogStart logs which binaries the runner uses, or why it has none.
func (r *Runner) LogStart(log *slog.Logger) {
	if r.missing != "" {
		log.Warn("jail ops unavailable", "reason", r.missing)
		return
	}
	log.Info("jail ops ready", "jailer", r.jailer.Path, "firecracker", r.fc.Path, "chroot_base", r.base)
}

// jail is the jail of id as this runner builds it. Without binaries it still
// names the jail (for Signal and Remove) by the conventional exec file name.
func (r *Runner) jail(id string, cgroups []string, level string) Jail {
	execFile := "/firecracker"
	if r.fc != nil {
		execFile = r.fc.Path
	}
	return Jail{ExecFile: execFile, Base: r.base, ID: id, UID: r.uid, GID: r.gid, Cgroups: cgroups, Level: level}
}

// Launch implements privileged.JailRuntime.
func (r *Runner) Launch(ctx context.Context, s privileged.JailSpec) (pid int, err error) {
	if r.missing != "" {
		return 0, errors.New(r.missing)
	}
	for _, b := range []*trustfs.Binary{r.jailer, r.fc} {
		if err := b.Verify(); err != nil {
			return 0, fmt.Errorf("jail %s: refusing to run it: %w", s.ID, err)
		}
	}
	j := r.jail(s.ID, s.Cgroups, s.LogLevel)
	args, err := j.Args()
	if err != nil {
		return 0, err
	}
	if err := r.ensureBase(); err != nil {
		return 0, err
	}
	if r.running(j) != 0 {
		return 0, &privileged.Error{Code: privileged.CodeInvalid, Message: fmt.Sprintf("jail %s: its firecracker still runs: stop it first", s.ID)}
	}
	if err := j.remove(); err != nil { // a stale jail
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = j.remove()
		}
	}()
	if err := j.prepare(); err != nil {
		return 0, err
	}
	for _, f := range s.Files {
		if err := r.place(j, f); err != nil {
			return 0, fmt.Errorf("jail %s: %s → %s: %w", s.ID, f.Src, f.Dst, err)
		}
	}
	return r.run(ctx, j, args, s.Console)
}

// run starts the jailer through its pinned descriptor in a session of its own
// (Firecracker must outlive the helper's), with stdout and stderr on the console
// log, waits for it to hand over (with --new-pid-ns it exits once Firecracker
// runs) and returns Firecracker's PID from the jail's PID file.
func (r *Runner) run(ctx context.Context, j Jail, args []string, console *os.File) (int, error) {
	cmd := &exec.Cmd{
		Path:        r.jailer.ExecPath(),
		Args:        append([]string{r.jailer.Path}, args...),
		Env:         r.env,
		Stdout:      console,
		Stderr:      console,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("jail %s: start the jailer %s: %w", j.ID, r.jailer.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return 0, fmt.Errorf("jail %s: jailer %s: %w (the console log says why)", j.ID, r.jailer.Path, err)
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return 0, fmt.Errorf("jail %s: the jailer did not hand over to firecracker: %w", j.ID, ctx.Err())
	}
	pid, err := readPID(j.PIDFile())
	if err != nil {
		return 0, fmt.Errorf("jail %s: %w", j.ID, err)
	}
	return pid, nil
}

// place puts one file in the jail through its descriptor, never its path, and
// never changes the source inode's owner or mode: a regular file is hard-linked
// (linkat AT_EMPTY_PATH: the inode checked is the inode linked; the owner's disk
// is already the owner's, so Firecracker, running as the owner, can use it as
// is), copied across filesystems only when read-only (a copy of a writable disk
// would swallow the guest's writes); a block device gets a new node of the same
// number, made here and so handed to the owner.
func (r *Runner) place(j Jail, f privileged.JailFile) error {
	dst := j.HostPath(f.Dst)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.File.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if err := unix.Mknod(dst, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return os.Lchown(dst, r.uid, r.gid)
	}
	err := unix.Linkat(int(f.File.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EXDEV) && !f.Writable {
		return copyFD(f.File, dst)
	}
	if errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%s and the jail are on different filesystems and a writable disk cannot be copied: keep banger's state on one filesystem", f.Src)
	}
	return err
}

// copyFD copies the file an O_PATH descriptor names to dst (new, 0444). The
// reopen goes through /proc/self/fd, which names the descriptor's inode.
func copyFD(src *os.File, dst string) error {
	in, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(src.Fd())))
	if err != nil {
		return err
	}
	defer in.Close()
	return CopyToNew(in, dst)
}

// CopyToNew writes what r holds to dst, a new read-only (0444) file; on failure
// nothing is left at dst. A jail's read-only files are copied this way when they
// cannot be hard-linked in, by the helper and by the in-process jail alike.
func CopyToNew(r io.Reader, dst string) (err error) {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	_, err = io.Copy(out, r)
	return err
}

// ensureBase creates the chroot base, root's and 0755, and refuses one that is
// not a root-owned directory writable by root only, or that has an ancestor
// someone else could swap (trustfs.OpenDir): the jailer opens it by name after
// these checks, and everything under it is used by name.
func (r *Runner) ensureBase() error {
	if err := os.Mkdir(r.base, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("chroot base %s: %w", r.base, err)
	}
	d, err := trustfs.OpenDir(r.base)
	if err != nil {
		return fmt.Errorf("jail base: %w (banger system run/install prepare the root so): the jailer is refused rather than run where its chroot could be swapped", err)
	}
	return d.Close()
}

// running returns the PID of the jail's firecracker when it runs, else 0: the
// PID from the jail's PID file, if that process's executable is the jail's copy
// of firecracker.
func (r *Runner) running(j Jail) int {
	pid, err := readPID(j.PIDFile())
	if err != nil {
		return 0
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return 0
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe != j.HostPath("/"+filepath.Base(j.ExecFile)) {
		return 0
	}
	return pid
}

// readPID reads the jailer's PID file: a small file in the root-owned jail root.
func readPID(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a process id", path, strings.TrimSpace(string(data)))
	}
	return pid, nil
}

// Signal implements privileged.JailRuntime.
func (r *Runner) Signal(_ context.Context, id string, sig syscall.Signal, start uint64) error {
	j := r.jail(id, nil, "")
	pid := r.running(j)
	if pid == 0 {
		return nil // gone, or never this jail's
	}
	ref, err := process.Find(pid)
	if err != nil {
		return nil // exited since
	}
	if start != 0 && ref.Start != start {
		return &privileged.Error{Code: privileged.CodeInvalid, Message: fmt.Sprintf(
			"jail %s: its firecracker (pid %d) started at %d, not at %d: it is not the process you mean", id, pid, ref.Start, start)}
	}
	// process.Signal pins ref by pidfd and checks its start time, so a PID reused
	// since the checks above is never signalled.
	if err := process.Signal(ref, unix.Signal(sig)); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
}

// Remove implements privileged.JailRuntime.
func (r *Runner) Remove(_ context.Context, id string) error {
	j := r.jail(id, nil, "")
	if pid := r.running(j); pid != 0 {
		return &privileged.Error{Code: privileged.CodeInvalid, Message: fmt.Sprintf(
			"jail %s: its firecracker (pid %d) still runs: stop the VM first", id, pid)}
	}
	return j.remove()
}
