// Package layout names every file and directory banger keeps under its root.
//
// Everything lives under one root (--root DIR or BANGER_ROOT), so tests and several
// instances never share state:
//
//	ROOT/config.toml         configuration (optional; defaults apply)
//	ROOT/install.json        install metadata: owner uid/gid, version, paths
//	ROOT/run/                runtime: sockets and pid files
//	ROOT/state/              the store, images, kernels, disks
//	ROOT/logs/               daemon, helper and audit logs, VM consoles
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
	RunDir   string
	StateDir string
	LogDir   string
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

// ConfigPath is the optional configuration file.
func (l Layout) ConfigPath() string { return filepath.Join(l.Root, "config.toml") }

// InstallMetadataPath records the owner and version; written by `banger system run|install`.
func (l Layout) InstallMetadataPath() string { return filepath.Join(l.Root, "install.json") }

// DaemonSocket is bangerd's API socket.
func (l Layout) DaemonSocket() string { return filepath.Join(l.RunDir, "bangerd.sock") }

// HelperSocket is the root helper's socket; only the owner may connect.
func (l Layout) HelperSocket() string { return filepath.Join(l.RunDir, "helper.sock") }

// DaemonPIDFile and HelperPIDFile are written by detached `banger system run`.
func (l Layout) DaemonPIDFile() string { return filepath.Join(l.RunDir, "bangerd.pid") }

// HelperPIDFile is the helper's pid file.
func (l Layout) HelperPIDFile() string { return filepath.Join(l.RunDir, "helper.pid") }

// VMSocketDir holds per-VM sockets (VMM API, agent, vsock).
func (l Layout) VMSocketDir() string { return filepath.Join(l.RunDir, "vms") }

// StorePath is the SQLite state store.
func (l Layout) StorePath() string { return filepath.Join(l.StateDir, "banger.db") }

// ImagesDir, KernelsDir and DisksDir hold artifacts.
func (l Layout) ImagesDir() string { return filepath.Join(l.StateDir, "images") }

// KernelsDir holds imported kernels and initrds.
func (l Layout) KernelsDir() string { return filepath.Join(l.StateDir, "kernels") }

// DisksDir holds per-VM copy-on-write disks.
func (l Layout) DisksDir() string { return filepath.Join(l.StateDir, "disks") }

// DaemonLog, HelperLog and AuditLog are written by the processes under `system run -d`.
func (l Layout) DaemonLog() string { return filepath.Join(l.LogDir, "bangerd.log") }

// HelperLog is the helper's own log.
func (l Layout) HelperLog() string { return filepath.Join(l.LogDir, "helper.log") }

// AuditLog gets one JSON line per privileged call.
func (l Layout) AuditLog() string { return filepath.Join(l.LogDir, "helper-audit.log") }

// Dirs lists the directories the layout needs, parents first.
func (l Layout) Dirs() []string {
	return []string{l.Root, l.RunDir, l.VMSocketDir(), l.StateDir, l.ImagesDir(), l.KernelsDir(), l.DisksDir(), l.LogDir}
}

// Create makes every directory and, when uid >= 0, chowns them to uid:gid so an
// unprivileged owner daemon can use a root prepared by root. The root itself is
// left to whoever made it (root, under `system run|install`): the owner gets
// run/, state/ and logs/, while config.toml, install.json and the jail base stay
// root's, out of the owner's reach.
func (l Layout) Create(uid, gid int) error {
	if err := os.MkdirAll(l.Root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", l.Root, err)
	}
	for _, d := range l.Dirs() {
		if d == l.Root {
			continue
		}
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
		if uid >= 0 {
			if err := os.Chown(d, uid, gid); err != nil {
				return fmt.Errorf("chown %s to %d:%d: %w", d, uid, gid, err)
			}
		}
	}
	return nil
}
