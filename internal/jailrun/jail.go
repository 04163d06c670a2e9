// Package jailrun builds a Firecracker jail and runs the jailer in it: the
// helper's side of the jail ops (privileged.JailRuntime), as root.
//
// It is a leaf on purpose: banger-helper links it, and the code that runs as root
// must be only what the helper needs, not the Firecracker driver with its REST
// client and agent (internal/vmm/firecracker; cmd/deps_test.go holds the line).
// The jail's layout and the jailer's command line are the driver's
// (firecracker.Jailer) for the same inputs; jailhelper's tests check the two agree.
package jailrun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// Paths inside a jail, as the jailed Firecracker sees them (firecracker.JailLog
// and firecracker.JailAPISocket).
const (
	APISocket = "/run/firecracker.socket"
	LogPath   = "/firecracker.log"
)

// idRe is a jailer --id: ASCII letters, digits and '-', 1 to 64 bytes.
var idRe = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

// Jail is one VM's jail as banger-helper builds it: the chroot of instance ID
// under Base for the firecracker binary ExecFile, run as UID:GID.
type Jail struct {
	// ExecFile is the firecracker binary (absolute); the jail directory is named
	// after its base name, as the jailer names it.
	ExecFile string
	// Base is the jailer's --chroot-base-dir (privileged.JailBase).
	Base string
	// ID is the instance id (--id): a banger VM id.
	ID string
	// UID and GID Firecracker runs as: the owner's, never 0.
	UID, GID int
	// Cgroups are cgroup v2 --cgroup values, validated by the helper.
	Cgroups []string
	// Level is firecracker's --level, "" for its default.
	Level string
}

// Dir is <base>/<exec file name>/<id>: everything made for this instance.
func (j Jail) Dir() string { return filepath.Join(j.Base, filepath.Base(j.ExecFile), j.ID) }

// ChrootDir is the jail's root.
func (j Jail) ChrootDir() string { return filepath.Join(j.Dir(), "root") }

// HostPath maps a path inside the jail to the host.
func (j Jail) HostPath(p string) string { return filepath.Join(j.ChrootDir(), p) }

// PIDFile is where the jailer writes Firecracker's host PID.
func (j Jail) PIDFile() string { return j.HostPath(filepath.Base(j.ExecFile) + ".pid") }

// Validate refuses what the jailer must never be given.
func (j Jail) Validate() error {
	var errs []error
	if !filepath.IsAbs(j.ExecFile) || !filepath.IsAbs(j.Base) {
		errs = append(errs, fmt.Errorf("jail: exec file %q and chroot base %q must be absolute", j.ExecFile, j.Base))
	}
	if !idRe.MatchString(j.ID) {
		errs = append(errs, fmt.Errorf("jail: id %q: use 1 to 64 ASCII letters, digits or '-'", j.ID))
	}
	if j.UID <= 0 || j.GID <= 0 {
		errs = append(errs, fmt.Errorf("jail %s: uid %d gid %d: Firecracker must not run as root", j.ID, j.UID, j.GID))
	}
	return errors.Join(errs...)
}

// Args is the jailer's command line after the binary, the same as
// firecracker.Jailer.Command's with KeepStdio and no network namespace:
//
//	--id ID --exec-file FC --uid U --gid G --chroot-base-dir DIR --cgroup-version 2
//	[--cgroup C]... --new-pid-ns -- --api-sock /run/firecracker.socket
//	--log-path /firecracker.log [--level L]
func (j Jail) Args() ([]string, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	args := []string{
		"--id", j.ID,
		"--exec-file", j.ExecFile,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.Base,
		"--cgroup-version", "2",
	}
	for _, c := range j.Cgroups {
		args = append(args, "--cgroup", c)
	}
	args = append(args, "--new-pid-ns", "--", "--api-sock", APISocket, "--log-path", LogPath)
	if j.Level != "" {
		args = append(args, "--level", j.Level)
	}
	return args, nil
}

// prepare makes the jail's root (root's, 0755), its /run (the owner's, 0750:
// Firecracker makes its sockets there) and Firecracker's log (created here, so
// the owner's). Paths are safe to use by name: Base and its ancestors are root's
// and only root writes in them (Runner.ensureBase checks), and the jail's
// directories above /run are made here, by root.
func (j Jail) prepare() error {
	root := j.ChrootDir()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("jail %s: %w", j.ID, err)
	}
	run := j.HostPath(filepath.Dir(APISocket))
	if err := os.Mkdir(run, 0o750); err != nil {
		return fmt.Errorf("jail %s: %w", j.ID, err)
	}
	if err := os.Chown(run, j.UID, j.GID); err != nil {
		return fmt.Errorf("jail %s: %w", j.ID, err)
	}
	f, err := os.OpenFile(j.HostPath(LogPath), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("jail %s: log: %w", j.ID, err)
	}
	defer f.Close()
	if err := f.Chown(j.UID, j.GID); err != nil {
		return fmt.Errorf("jail %s: log: %w", j.ID, err)
	}
	return nil
}

// remove deletes the jail (Go's RemoveAll works by directory descriptors and
// never follows a symlink the jailed user left in /run).
func (j Jail) remove() error {
	if !idRe.MatchString(j.ID) {
		return fmt.Errorf("remove jail: id %q is not a jail id", j.ID)
	}
	if err := os.RemoveAll(j.Dir()); err != nil {
		return fmt.Errorf("remove jail %s: %w", j.ID, err)
	}
	return nil
}
