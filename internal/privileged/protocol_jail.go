package privileged

import (
	"os"
	"path/filepath"
	"syscall"

	"banger/internal/layout"
)

// Jailer ops: Firecracker under its jailer, for an unprivileged bangerd (see
// JailRuntime). The helper builds every jail from its own configuration: its jailer
// and firecracker binaries, the chroot base JailBase, the owner's uid and gid. A
// request names only the VM, the files to place, a few firecracker flags and the
// console log, each checked before anything runs.
const (
	OpJailLaunch = "JailLaunch"
	OpJailSignal = "JailSignal"
	OpJailRemove = "JailRemove"
)

// Paths inside a jail the helper places files at; the only JailFileSpec.Dst values
// accepted. They match the firecracker driver's (JailKernel, JailInitrd, JailRootfs).
const (
	JailDstKernel = "/vmlinux"
	JailDstInitrd = "/initrd"
	JailDstRootfs = "/rootfs"
)

// JailBase is the jailer's --chroot-base-dir for a root: short (socket paths under it
// must fit in 107 bytes) and on the filesystem of the disks, which are hard-linked in.
// bangerd's driver and the helper both use it, so they agree on every jail path.
//
// It lives directly in the root, which stays root's (layout.Create gives the owner
// only run/, state/ and logs/), so the owner cannot swap it for a symlink between
// the helper's checks and the jailer's use; the helper also checks every ancestor.
func JailBase(l layout.Layout) string { return filepath.Join(l.Root, "jail") }

// JailLaunchRequest builds the jail of one VM and starts the jailer in it.
type JailLaunchRequest struct {
	// ID is the jail's instance id: a banger VM id (lowercase letters, digits, '-').
	ID    string         `json:"id"`
	Files []JailFileSpec `json:"files"`
	// Cgroups are cgroup v2 limits: only "cpu.max=<quota> <period>" and
	// "memory.max=<bytes>".
	Cgroups []string `json:"cgroups,omitempty"`
	// FirecrackerArgs are forwarded after "--": only --api-sock /run/firecracker.socket,
	// --log-path /firecracker.log and --level <level>.
	FirecrackerArgs []string `json:"firecracker_args"`
	// ConsoleLog receives firecracker's stdout and stderr: the VM's own console
	// log, ROOT/logs/vms/<id, or its first 12 characters>.console.log. The helper
	// creates it for the owner, or appends to the owner's existing one; it never
	// truncates (bangerd removes the old log before a boot).
	ConsoleLog string `json:"console_log"`
}

// JailFileSpec is one file to place in the jail. Src is one of the VM's own files:
// an owner-owned regular file with one link under ROOT/state/disks/<id>/, or,
// read-only, under ROOT/state/images/ or ROOT/state/kernels/; or this VM's
// device-mapper snapshot (/dev/mapper/NAME) as the root disk. Only the root disk
// (JailDstRootfs) may be writable. Symlinks on the way are refused.
type JailFileSpec struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Writable bool   `json:"writable"`
}

// JailLaunchResponse is firecracker's host PID.
type JailLaunchResponse struct {
	PID int `json:"pid"`
}

// JailSignalRequest signals the firecracker of one jail: the helper reads its PID from
// the jail's PID file and checks the process is that jail's firecracker (and, when
// PIDStart is set, that it started then) before signalling. A process gone is no error.
type JailSignalRequest struct {
	ID       string `json:"id"`
	Signal   string `json:"signal"` // one of JailSignals
	PIDStart uint64 `json:"pid_start,omitempty"`
}

// JailSignalResponse is empty on success.
type JailSignalResponse struct{}

// JailRemoveRequest deletes one jail; refused while its firecracker runs. A jail that
// does not exist is not an error.
type JailRemoveRequest struct {
	ID string `json:"id"`
}

// JailRemoveResponse is empty on success.
type JailRemoveResponse struct{}

// JailSignalNames are the signals JailSignal sends, by name.
func JailSignalNames() []string { return []string{"SIGTERM", "SIGKILL", "SIGINT"} }

// JailSignalByName is the signal JailSignal sends for name; false when it sends none.
func JailSignalByName(name string) (syscall.Signal, bool) {
	switch name {
	case "SIGTERM":
		return syscall.SIGTERM, true
	case "SIGKILL":
		return syscall.SIGKILL, true
	case "SIGINT":
		return syscall.SIGINT, true
	}
	return 0, false
}

// JailSignalName is the JailSignal name of sig, or "" when it sends no such signal.
func JailSignalName(sig syscall.Signal) string {
	for _, n := range JailSignalNames() {
		if s, _ := JailSignalByName(n); s == sig {
			return n
		}
	}
	return ""
}

// JailFile is a validated file to place. File is the source, opened (O_PATH) beneath
// the root with no symlink followed and checked on that descriptor, so a path swapped
// after validation cannot lead the placement anywhere else: place it through File
// (linkat AT_EMPTY_PATH, or mknod of its device number), never by Src, which is only
// for messages. The server closes File after Launch.
type JailFile struct {
	Src      string
	File     *os.File
	Dst      string
	Writable bool
}

// JailSpec is a validated JailLaunchRequest, for JailRuntime.Launch.
type JailSpec struct {
	ID      string
	Files   []JailFile
	Cgroups []string
	// LogLevel is firecracker's --level, "" for its default.
	LogLevel string
	// Console is the open console log (the helper opened it beneath the root).
	Console *os.File
}
