// Package jailhelper runs Firecracker's jailer through banger-helper: Runner is the
// helper's side (privileged.JailRuntime), Client bangerd's (firecracker.JailOps).
// It exists apart from both because internal/privileged cannot import the
// firecracker driver, which imports it.
package jailhelper

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

	"golang.org/x/sys/unix"

	"banger/internal/privileged"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/process"
)

// Runner is banger-helper's privileged.JailRuntime: every jail it builds uses its own
// binaries, chroot base and uid/gid, whatever the request.
type Runner struct {
	// Jailer and ExecFile are the jailer and firecracker binaries, absolute
	// (resolved with exec.LookPath when the helper starts).
	Jailer, ExecFile string
	// ChrootBase is privileged.JailBase of the helper's layout.
	ChrootBase string
	// UID and GID are the owner's: firecracker runs as the owner.
	UID, GID int
	// Missing, when not empty, says why there is no jailer or firecracker binary:
	// Launch answers it (Signal and Remove still work, to clean up old jails).
	Missing string
	// Env is the jailer's environment; nil inherits the helper's. Tests point it at a
	// fake jailer.
	Env []string
}

var _ privileged.JailRuntime = Runner{}

// jail is the jail of id as this runner builds it.
func (r Runner) jail(id string, cgroups []string, level string) firecracker.Jailer {
	return firecracker.Jailer{
		Binary: r.Jailer, ExecFile: r.ExecFile, ID: id, UID: r.UID, GID: r.GID,
		ChrootBaseDir: r.ChrootBase,
		Cgroups:       cgroups,
		KeepStdio:     true,
		Firecracker:   firecracker.Firecracker{LogPath: firecracker.JailLog, Level: level},
	}
}

// Launch implements privileged.JailRuntime.
func (r Runner) Launch(ctx context.Context, s privileged.JailSpec) (pid int, err error) {
	j := r.jail(s.ID, s.Cgroups, s.LogLevel)
	if err := r.ensureBase(); err != nil {
		return 0, err
	}
	if r.running(j) != 0 {
		return 0, &privileged.Error{Code: privileged.CodeInvalid, Message: fmt.Sprintf("jail %s: its firecracker still runs: stop it first", s.ID)}
	}
	if err := j.RemoveJail(); err != nil { // a stale jail
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = j.RemoveJail()
		}
	}()
	// The jail's directories and log; the files are placed by descriptor (place).
	if err := j.PrepareChroot(nil); err != nil {
		return 0, err
	}
	for _, f := range s.Files {
		if err := r.place(j, f); err != nil {
			return 0, fmt.Errorf("jail %s: %s → %s: %w", s.ID, f.Src, f.Dst, err)
		}
	}
	return firecracker.LaunchJailed(ctx, j, firecracker.LaunchOptions{Stdout: s.Console, Stderr: s.Console, Env: r.Env})
}

// NewRunner resolves the jailer and firecracker binaries (names or paths, as in
// config.toml) with exec.LookPath; a missing one makes a Runner whose Launch says so.
func NewRunner(jailer, firecrackerBin, chrootBase string, uid, gid int) Runner {
	r := Runner{ChrootBase: chrootBase, UID: uid, GID: gid}
	j, err := exec.LookPath(jailer)
	if err != nil {
		r.Missing = fmt.Sprintf("jailer %q not found (%v): install the jailer that comes with Firecracker, or fix vmm.jailer in config.toml, then restart banger-helper", jailer, err)
		return r
	}
	fc, err := exec.LookPath(firecrackerBin)
	if err != nil {
		r.Missing = fmt.Sprintf("firecracker %q not found (%v): install Firecracker, or fix vmm.firecracker in config.toml, then restart banger-helper", firecrackerBin, err)
		return r
	}
	if r.Jailer, err = filepath.Abs(j); err == nil {
		r.ExecFile, err = filepath.Abs(fc)
	}
	if err != nil {
		r.Missing = fmt.Sprintf("resolve the jailer and firecracker binaries: %v", err)
	}
	return r
}

// place puts one file in the jail through its descriptor, as Jailer.PrepareChroot
// would by path: a regular file hard-linked (linkat AT_EMPTY_PATH, so the inode
// checked is the inode linked), copied across filesystems only when read-only; a
// block device as a node of the same number. Writable files and device nodes go to
// the jail's uid:gid.
func (r Runner) place(j firecracker.Jailer, f privileged.JailFile) error {
	dst := j.HostPath(f.Dst)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.File.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if err := unix.Mknod(dst, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return os.Lchown(dst, r.UID, r.GID)
	}
	err := unix.Linkat(int(f.File.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EXDEV) && !f.Writable {
		err = copyFD(f.File, dst)
	} else if errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%s and the jail are on different filesystems and a writable disk cannot be copied: keep banger's state on one filesystem", f.Src)
	}
	if err != nil {
		return err
	}
	if f.Writable {
		return os.Lchown(dst, r.UID, r.GID)
	}
	return nil
}

// copyFD copies the file an O_PATH descriptor names to dst (new, 0444).
func copyFD(src *os.File, dst string) (err error) {
	in, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(src.Fd())))
	if err != nil {
		return err
	}
	defer in.Close()
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
	_, err = io.Copy(out, in)
	return err
}

// ensureBase creates the chroot base, root's and 0755, and refuses one that is not a
// root-owned directory (a symlink planted by someone else, say).
func (r Runner) ensureBase() error {
	if r.Missing != "" {
		return errors.New(r.Missing)
	}
	if r.Jailer == "" || r.ExecFile == "" {
		return errors.New("no jailer or firecracker binary: set vmm.jailer and vmm.firecracker in config.toml and restart banger-helper")
	}
	if err := os.Mkdir(r.ChrootBase, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("chroot base %s: %w", r.ChrootBase, err)
	}
	fi, err := os.Lstat(r.ChrootBase)
	if err != nil {
		return fmt.Errorf("chroot base %s: %w", r.ChrootBase, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("chroot base %s must be a directory owned by root, writable by root only: move it away and retry", r.ChrootBase)
	}
	return rootOwnedAncestors(filepath.Dir(r.ChrootBase))
}

// rootOwnedAncestors refuses a path any of whose directories someone other than
// root could rename or replace: each must be root's and not writable by group or
// others, unless sticky (as /tmp is: there only an entry's owner may rename it).
// The jailer opens the chroot base by name after the helper's checks, so this is
// what keeps it from being swapped in between.
func rootOwnedAncestors(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("jail base ancestor %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		writable := fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0
		if !fi.IsDir() || !ok || st.Uid != 0 || writable {
			return fmt.Errorf("jail base: %s must be a root-owned directory that only root can change (banger system run/install prepare the root so): the jailer is refused rather than run where its chroot could be swapped", d)
		}
		if d == "/" {
			return nil
		}
	}
}

// running returns the PID of the jail's firecracker when it runs, else 0: the PID
// from the jail's PID file, if that process's executable is the jail's copy of
// firecracker.
func (r Runner) running(j firecracker.Jailer) int {
	data, err := os.ReadFile(j.PIDFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
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

// Signal implements privileged.JailRuntime.
func (r Runner) Signal(_ context.Context, id string, sig syscall.Signal, start uint64) error {
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
func (r Runner) Remove(_ context.Context, id string) error {
	j := r.jail(id, nil, "")
	if pid := r.running(j); pid != 0 {
		return &privileged.Error{Code: privileged.CodeInvalid, Message: fmt.Sprintf(
			"jail %s: its firecracker (pid %d) still runs: stop the VM first", id, pid)}
	}
	return j.RemoveJail()
}
