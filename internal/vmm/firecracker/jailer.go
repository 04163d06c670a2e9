package firecracker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/jailrun"
)

// Where banger puts things inside a jail (paths as the jailed Firecracker
// sees them). The host side of each is Jailer.HostPath(path).
const (
	JailAPISocket   = "/run/firecracker.socket" // Firecracker's default
	JailVsockSocket = "/run/vsock.sock"         // guest-initiated: /run/vsock.sock_<port>
	JailKernel      = "/vmlinux"
	JailInitrd      = "/initrd"
	JailRootfs      = "/rootfs"
	JailLog         = "/firecracker.log"
	JailMetrics     = "/firecracker.metrics"
)

// DefaultChrootBase is the jailer's default --chroot-base-dir.
const DefaultChrootBase = "/srv/jailer"

// Jailer is the jailer's command line and the layout of the jail it builds.
//
// Choices, always made (not options):
//   - --cgroup-version 2: banger's hosts are cgroup v2 (the jailer's default is 1);
//   - --daemonize, unless KeepStdio: the jailer calls setsid and points stdio
//     at /dev/null, so Firecracker outlives the helper that launched it and
//     bangerd restarts; its output goes to its log file (Firecracker.LogPath
//     or PUT /logger), and the guest's serial console, which Firecracker
//     writes to its stdout, is lost;
//   - --new-pid-ns: Firecracker is PID 1 of its own PID namespace, so nothing
//     it could spawn survives it, and the jailer writes its host PID to
//     <chroot>/<exec-file-name>.pid, which is how banger finds it (PIDFile).
type Jailer struct {
	// Binary is the jailer executable.
	Binary string
	// ExecFile is the firecracker executable the jailer copies into the jail
	// and execs; absolute.
	ExecFile string
	// ID is the instance id (--id, see InstanceID); it names the jail and the cgroup.
	ID string
	// UID and GID Firecracker runs as; not 0.
	UID, GID int
	// ChrootBaseDir is --chroot-base-dir (default /srv/jailer). It should be
	// on the filesystem that holds the VMs' disks, so that they can be hard-linked in.
	ChrootBaseDir string
	// NetNS is the name of a network namespace under /var/run/netns for
	// --netns; empty keeps the host's.
	NetNS string
	// Cgroups are --cgroup values, "file=value" of cgroup v2, e.g. CPUMax(2)
	// or "memory.max=1073741824".
	Cgroups []string
	// KeepStdio leaves --daemonize out, so that Firecracker keeps the
	// jailer's stdout and stderr: its serial console. The launcher must then
	// start the jailer in a session of its own (what --daemonize would have
	// done: LaunchJailed does) and give it a file, never a pipe, as stdout.
	KeepStdio bool
	// Firecracker is the command line forwarded after "--". Its APISocket and
	// LogPath are paths inside the jail (default APISocket: JailAPISocket);
	// its ID and Binary are not used.
	Firecracker Firecracker
}

func (j Jailer) chrootBase() string {
	if j.ChrootBaseDir == "" {
		return DefaultChrootBase
	}
	return j.ChrootBaseDir
}

func (j Jailer) apiSocket() string {
	if j.Firecracker.APISocket == "" {
		return JailAPISocket
	}
	return j.Firecracker.APISocket
}

// JailDir is <chroot_base>/<exec_file_name>/<id>: everything the jailer made
// for this instance (RemoveJail deletes it).
func (j Jailer) JailDir() string {
	return filepath.Join(j.chrootBase(), filepath.Base(j.ExecFile), j.ID)
}

// ChrootDir is the jail's root: <chroot_base>/<exec_file_name>/<id>/root.
func (j Jailer) ChrootDir() string { return filepath.Join(j.JailDir(), "root") }

// HostPath maps a path inside the jail to the host.
func (j Jailer) HostPath(p string) string { return filepath.Join(j.ChrootDir(), p) }

// APISocketHostPath is where the API socket appears on the host: the path
// to give NewClient.
func (j Jailer) APISocketHostPath() string { return j.HostPath(j.apiSocket()) }

// PIDFile is where the jailer writes Firecracker's PID: <chroot>/<exec_file_name>.pid.
func (j Jailer) PIDFile() string { return j.HostPath(filepath.Base(j.ExecFile) + ".pid") }

// Validate checks the options before anything is built.
func (j Jailer) Validate() error {
	var errs []error
	if j.Binary == "" {
		errs = append(errs, errors.New("jailer: no binary path"))
	}
	if !filepath.IsAbs(j.ExecFile) {
		errs = append(errs, fmt.Errorf("jailer --exec-file %q: must be an absolute path to firecracker", j.ExecFile))
	}
	if err := ValidateInstanceID(j.ID); err != nil {
		errs = append(errs, fmt.Errorf("jailer --id: %w", err))
	}
	if j.UID <= 0 || j.GID <= 0 {
		errs = append(errs, fmt.Errorf("jailer --uid %d --gid %d: Firecracker must not run as root; give it an unprivileged uid and gid", j.UID, j.GID))
	}
	if !filepath.IsAbs(j.chrootBase()) {
		errs = append(errs, fmt.Errorf("jailer --chroot-base-dir %q: must be absolute", j.chrootBase()))
	}
	if j.NetNS != "" && (strings.ContainsAny(j.NetNS, "/\x00") || j.NetNS == "." || j.NetNS == "..") {
		errs = append(errs, fmt.Errorf("jailer --netns %q: give the name of a namespace under /var/run/netns", j.NetNS))
	}
	for _, c := range j.Cgroups {
		if !cgroupRe.MatchString(c) {
			errs = append(errs, fmt.Errorf("jailer --cgroup %q: want <controller>.<file>=<value>, e.g. %q", c, CPUMax(1)))
		}
	}
	// The host paths of the sockets must fit in a sockaddr_un; a guest-initiated
	// vsock connection adds "_<port>" (up to 11 bytes) to the vsock path.
	for _, s := range []struct{ what, path string }{
		{"API socket", j.APISocketHostPath()},
		{"vsock socket", j.HostPath(JailVsockSocket) + "_4294967295"},
	} {
		if len(s.path) > maxSocketPath {
			errs = append(errs, fmt.Errorf("jailer: the %s's host path %s is %d bytes, over Linux's %d: use a shorter --chroot-base-dir or id", s.what, s.path, len(s.path), maxSocketPath))
		}
	}
	return errors.Join(errs...)
}

// Command is the jailer's command line:
//
//	jailer --id ID --exec-file FC --uid U --gid G --chroot-base-dir DIR
//	       --cgroup-version 2 [--cgroup FILE=VALUE]... [--netns /var/run/netns/NAME]
//	       [--daemonize] --new-pid-ns -- --api-sock PATH [--log-path ...] [--level ...] [--no-seccomp]
func (j Jailer) Command() (Command, error) {
	if err := j.Validate(); err != nil {
		return Command{}, err
	}
	args := []string{
		"--id", j.ID,
		"--exec-file", j.ExecFile,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.chrootBase(),
		"--cgroup-version", "2",
	}
	for _, c := range j.Cgroups {
		args = append(args, "--cgroup", c)
	}
	if j.NetNS != "" {
		args = append(args, "--netns", filepath.Join("/var/run/netns", j.NetNS))
	}
	if !j.KeepStdio {
		args = append(args, "--daemonize")
	}
	args = append(args, "--new-pid-ns", "--")
	fc := j.Firecracker
	fc.APISocket = j.apiSocket()
	fcArgs, err := fc.args(false)
	if err != nil {
		return Command{}, fmt.Errorf("jailer %s: %w", j.ID, err)
	}
	return Command{Path: j.Binary, Args: append(args, fcArgs...)}, nil
}

// JailFile is a file to place in the jail.
type JailFile struct {
	Src string // on the host: a regular file or a block device
	Dst string // inside the jail, e.g. JailRootfs
	// Writable files (the VM's root disk) are handed to the jail's uid:gid,
	// and are never copied: the guest's writes must reach Src.
	Writable bool
}

// PrepareChroot builds the jail's root before the jailer runs (the jailer
// leaves existing directories alone) and places the VM's files in it, since
// a jailed Firecracker sees nothing outside:
//
//   - a regular file is hard-linked (same inode, no copy, instant);
//   - across filesystems a read-only file (kernel, initrd) is copied, but a
//     writable one is refused: a copy would swallow the guest's writes;
//   - a block device (a device-mapper snapshot) gets a device node of the
//     same number in the jail;
//   - Firecracker's --log-path, when set, is created empty (Firecracker
//     opens it but does not create it);
//   - writable files, the log and /run (where Firecracker creates its
//     sockets, mode 0750) are owned by UID:GID; shared read-only files keep their owner and
//     must be readable by that uid. The sockets Firecracker creates belong
//     to UID:GID: whoever else talks to them needs that group or a chown
//     (the root helper's socket-ownership step).
//
// Needs root (chown, mknod). Already-placed files (same inode) are accepted,
// so a retry is harmless.
func (j Jailer) PrepareChroot(files []JailFile) error {
	if err := j.Validate(); err != nil {
		return err
	}
	root := j.ChrootDir()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("jail %s: %w", j.ID, err)
	}
	run := filepath.Join(root, filepath.Dir(j.apiSocket()))
	if err := os.MkdirAll(run, 0o750); err != nil {
		return fmt.Errorf("jail %s: %w", j.ID, err)
	}
	if err := os.Chown(run, j.UID, j.GID); err != nil {
		return fmt.Errorf("jail %s: %w", j.ID, err)
	}
	for _, f := range files {
		if err := j.place(f); err != nil {
			return fmt.Errorf("jail %s: %s → %s: %w", j.ID, f.Src, f.Dst, err)
		}
	}
	if p := j.Firecracker.LogPath; p != "" {
		if err := j.createLog(p); err != nil {
			return fmt.Errorf("jail %s: log %s: %w", j.ID, p, err)
		}
	}
	return nil
}

// createLog creates Firecracker's log file in the jail, owned by the jail's
// uid; an existing one is kept (a retry).
func (j Jailer) createLog(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) == "/" {
		return errors.New("must be an absolute path inside the jail")
	}
	dst := j.HostPath(p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chown(dst, j.UID, j.GID)
}

func (j Jailer) place(f JailFile) error {
	if !filepath.IsAbs(f.Dst) || filepath.Clean(f.Dst) == "/" {
		return errors.New("destination must be an absolute path inside the jail")
	}
	dst := j.HostPath(f.Dst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	src, err := os.Stat(f.Src)
	if err != nil {
		return err
	}
	if got, err := os.Stat(dst); err == nil && os.SameFile(src, got) {
		return j.own(f, dst)
	}
	switch {
	case src.Mode().Type() == fs.ModeDevice: // block device (ModeCharDevice unset)
		st := src.Sys().(*syscall.Stat_t)
		if err := unix.Mknod(dst, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return os.Chown(dst, j.UID, j.GID)
	case !src.Mode().IsRegular():
		return fmt.Errorf("%s is neither a regular file nor a block device", src.Mode().Type())
	}
	err = os.Link(f.Src, dst)
	if errors.Is(err, syscall.EXDEV) {
		if f.Writable {
			return fmt.Errorf("%s and the jail are on different filesystems and a writable disk cannot be copied (the guest's writes would be lost): put --chroot-base-dir on the filesystem that holds the disks", f.Src)
		}
		err = copyFile(f.Src, dst)
	}
	if err != nil {
		return err
	}
	return j.own(f, dst)
}

func (j Jailer) own(f JailFile, dst string) error {
	if !f.Writable {
		return nil
	}
	return os.Chown(dst, j.UID, j.GID)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return jailrun.CopyToNew(in, dst)
}

// RemoveJail deletes what PrepareChroot and the jailer made for this
// instance (JailDir). Hard links and device nodes go; the files they point
// at stay. Call it once Firecracker has exited.
func (j Jailer) RemoveJail() error {
	if err := ValidateInstanceID(j.ID); err != nil {
		return fmt.Errorf("remove jail: %w", err)
	}
	if err := os.RemoveAll(j.JailDir()); err != nil {
		return fmt.Errorf("remove jail %s: %w", j.ID, err)
	}
	return nil
}
