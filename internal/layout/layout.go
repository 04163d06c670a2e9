// Package layout names every file and directory banger keeps under its root, and
// says who owns each of them.
//
// Everything lives under one root (--root DIR or BANGER_ROOT), so tests and several
// instances never share state:
//
//	ROOT/                    root's (root:root 0755, not group/other-writable)
//	ROOT/config.toml         root's: configuration (optional; defaults apply)
//	ROOT/install.json        root's: install metadata (owner uid/gid, version, paths)
//	ROOT/system/             root's (0755): what only root writes at run time:
//	  helper.log               the helper's stdout/stderr under `system run -d`
//	  helper-audit.log         the helper's audit trail, one line per call
//	  helper.pid, bangerd.pid  records of the processes `system run -d` started
//	                           (PID, start time, executable), read by `system stop`
//	ROOT/bin/                root's (0755): the binaries `system run` starts
//	                         (banger-helper, bangerd, banger-agent, banger-init),
//	                         copied from where banger was built so the owner can
//	                         run bangerd even from a checkout it cannot enter
//	ROOT/helper/             root's (0755): the helper's socket, helper.sock, made
//	                         and handed to the owner by the helper (HelperSocketDir)
//	ROOT/jail/               root's: the Firecracker jailer's chroot base
//	                         (privileged.JailBase); the jails below it are made by
//	                         the helper
//	ROOT/run/                the owner's: bangerd.sock, per-VM sockets in run/vms/
//	ROOT/state/              the owner's: the store, images/, kernels/, disks/
//	ROOT/logs/               the owner's: bangerd.log, VM consoles in logs/vms/
//
// # Ownership model
//
// Two parties act under ROOT. Root runs banger-helper and the `banger system ...`
// commands; the owner (one unprivileged user, never root) runs bangerd and
// everything bangerd starts. The owner can write run/, state/ and logs/ and
// everything below them: it can plant symlinks, hard links to root's files,
// FIFOs, sockets and directories there, and swap them while root works. So everything that runs as root treats those paths as
// hostile:
//
//   - It reaches them only through directory descriptors opened beneath ROOT with
//     openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) and O_NOFOLLOW, and changes
//     owners and modes with fchown/fchmod on the descriptor it checked, never by
//     path.
//   - It chowns or truncates only what it created itself (mkdirat/O_EXCL), or a
//     directory that was root's before root handed it over; an existing file or
//     directory of someone else is refused with an error saying what to remove.
//   - It appends to an existing owner-side file only when that file is a regular
//     file of the owner with one link (never a hard link to someone else's file),
//     opened non-blocking (a FIFO cannot hang it).
//   - It signals a process only after pinning it with a pidfd and checking its
//     executable (device and inode) and start time against what root recorded, in
//     ROOT/system/, when it started it.
//   - It reads configuration and runs binaries only from root-owned paths that no
//     one else can write, up to / (package trustfs); ROOT itself must be such a
//     path, or root-run commands refuse to prepare it.
//
// The root-owned files above stay root's: nothing chowns them to the owner, and
// the owner cannot rename, replace or delete them because ROOT and ROOT/system
// are root's. The helper's socket is the one thing root makes for the owner to
// use: the helper binds it in ROOT/helper/, root's, and hands it over there, so it
// never acts on a path the owner controls (package privileged).
//
// bangerd never runs as root: `banger system run|install` refuse an owner of
// uid 0.
package layout

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultRoot is used when neither --root nor BANGER_ROOT is given.
const DefaultRoot = "/var/lib/banger"

// EnvRoot is the environment variable that moves the root.
const EnvRoot = "BANGER_ROOT"

// Layout holds the absolute paths under one root. The zero value is not usable;
// build one with New.
type Layout struct {
	Root     string
	RunDir   string // the owner's
	StateDir string // the owner's
	LogDir   string // the owner's
}

// Resolve picks the root: the flag value if set, else $BANGER_ROOT, else DefaultRoot.
func Resolve(flagRoot string) (Layout, error) {
	root := flagRoot
	if root == "" {
		root = os.Getenv(EnvRoot)
	}
	if root == "" {
		root = DefaultRoot
	}
	return New(root)
}

// New returns the layout under root, made absolute and cleaned.
func New(root string) (Layout, error) {
	if root == "" {
		return Layout{}, fmt.Errorf("banger root is empty: pass --root DIR or set %s", EnvRoot)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return Layout{}, fmt.Errorf("banger root %q: %w", root, err)
	}
	l := Layout{
		Root:     abs,
		RunDir:   filepath.Join(abs, "run"),
		StateDir: filepath.Join(abs, "state"),
		LogDir:   filepath.Join(abs, "logs"),
	}
	// unix socket paths are limited to 107 bytes; refuse a root that cannot hold them
	// now rather than failing later with an obscure bind error.
	if n := len(l.VMSocketDir()) + len("/0123456789ab.agent.sock"); n > 107 {
		return Layout{}, fmt.Errorf("banger root %q is too long for unix socket paths (%d bytes, max 107): choose a shorter --root", abs, n)
	}
	return l, nil
}

// ConfigPath is the optional configuration file. Root's.
func (l Layout) ConfigPath() string { return filepath.Join(l.Root, "config.toml") }

// InstallMetadataPath records the owner and version; written by `banger system
// run|install`. Root's.
func (l Layout) InstallMetadataPath() string { return filepath.Join(l.Root, "install.json") }

// BinDir holds the binaries `banger system run` starts: root's (0755), copied
// there from the build so the owner can execute bangerd wherever banger was built.
func (l Layout) BinDir() string { return filepath.Join(l.Root, "bin") }

// SystemDir holds what only root writes at run time: the helper's logs and the
// records of the processes `banger system run -d` started. Root's, 0755.
func (l Layout) SystemDir() string { return filepath.Join(l.Root, "system") }

// DaemonSocket is bangerd's API socket. The owner's.
func (l Layout) DaemonSocket() string { return filepath.Join(l.RunDir, "bangerd.sock") }

// HelperSocketDir holds the root helper's socket: root's (0755), so that root
// binds, chmods and chowns the socket where the owner can swap nothing, and the
// owner can still reach it.
func (l Layout) HelperSocketDir() string { return filepath.Join(l.Root, "helper") }

// HelperSocket is the root helper's socket (owner's, 0600); only the owner may connect.
func (l Layout) HelperSocket() string { return filepath.Join(l.HelperSocketDir(), "helper.sock") }

// DaemonPIDFile records the bangerd a detached `banger system run` started. It is
// root's (under SystemDir): what root later signals must not be the owner's choice.
func (l Layout) DaemonPIDFile() string { return filepath.Join(l.SystemDir(), "bangerd.pid") }

// HelperPIDFile records the helper a detached `banger system run` started. Root's.
func (l Layout) HelperPIDFile() string { return filepath.Join(l.SystemDir(), "helper.pid") }

// VMSocketDir holds per-VM sockets (VMM API, agent, vsock). The owner's.
func (l Layout) VMSocketDir() string { return filepath.Join(l.RunDir, "vms") }

// StorePath is the SQLite state store. The owner's.
func (l Layout) StorePath() string { return filepath.Join(l.StateDir, "banger.db") }

// ImagesDir holds imported root filesystem images. The owner's.
func (l Layout) ImagesDir() string { return filepath.Join(l.StateDir, "images") }

// KernelsDir holds imported kernels and initrds. The owner's.
func (l Layout) KernelsDir() string { return filepath.Join(l.StateDir, "kernels") }

// DisksDir holds per-VM copy-on-write disks. The owner's.
func (l Layout) DisksDir() string { return filepath.Join(l.StateDir, "disks") }

// DaemonLog is bangerd's log under `system run -d`. The owner's: root only ever
// creates it (O_EXCL) or appends to the owner's own single-link regular file.
func (l Layout) DaemonLog() string { return filepath.Join(l.LogDir, "bangerd.log") }

// HelperLog is the helper's own log under `system run -d`. Root's (under SystemDir).
func (l Layout) HelperLog() string { return filepath.Join(l.SystemDir(), "helper.log") }

// AuditLog gets one JSON line per privileged call. Root's (under SystemDir), so the
// owner can neither rewrite nor delete the trail of what it asked for.
func (l Layout) AuditLog() string { return filepath.Join(l.SystemDir(), "helper-audit.log") }

// Dirs lists the directories the layout needs, parents first: root's (ROOT and
// SystemDir), then the owner's.
func (l Layout) Dirs() []string {
	return append([]string{l.Root, l.SystemDir()}, l.OwnerDirs()...)
}

// OwnerDirs lists the directories the owner owns and writes, parents first.
func (l Layout) OwnerDirs() []string {
	return []string{l.RunDir, l.VMSocketDir(), l.StateDir, l.ImagesDir(), l.KernelsDir(), l.DisksDir(), l.LogDir}
}
