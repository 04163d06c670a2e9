// Package ext4 builds, checks and edits ext4 root filesystem images with
// e2fsprogs, without privileges: `mkfs.ext4 -d` copies a staged tree of
// directories and file contents into a new image file, and a generated
// `debugfs -w -f` script then sets what an unprivileged process cannot create
// on the host (owners, setuid modes, symlinks, device nodes, fifos, xattrs).
// Both tools write only the image file they are given.
package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Errors a caller can test for with errors.Is.
var (
	// ErrToolMissing means e2fsprogs is not installed.
	ErrToolMissing = errors.New("ext4: e2fsprogs tool not found")
	// ErrNotExt4 marks a file that is not an ext4 (or ext2/3) filesystem.
	ErrNotExt4 = errors.New("ext4: not an ext4 filesystem")
	// ErrCorrupt marks a filesystem that e2fsck does not pass as clean.
	ErrCorrupt = errors.New("ext4: filesystem has errors")
	// ErrNoSpace marks a build that ran out of disk on the host; it also
	// matches syscall.ENOSPC.
	ErrNoSpace = fmt.Errorf("ext4: %w", syscall.ENOSPC)
	// ErrImageFull marks an edit that ran out of space inside the image.
	ErrImageFull = errors.New("ext4: no space left inside the image")
)

// Tools are the e2fsprogs binaries used. Find fills them from PATH and the
// sbin directories, which an unprivileged user's PATH often lacks.
type Tools struct {
	Mkfs    string // mkfs.ext4 (mke2fs)
	Debugfs string
	E2fsck  string
}

// FindTools locates mkfs.ext4, debugfs and e2fsck.
func FindTools() (Tools, error) {
	var t Tools
	for _, x := range []struct {
		name string
		dst  *string
	}{{"mkfs.ext4", &t.Mkfs}, {"debugfs", &t.Debugfs}, {"e2fsck", &t.E2fsck}} {
		p, err := lookTool(x.name)
		if err != nil {
			return Tools{}, err
		}
		*x.dst = p
	}
	return t, nil
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w: install e2fsprogs (apt-get install e2fsprogs)", name, ErrToolMissing)
}

// run runs a tool and returns its stdout and stderr. A failure carries the
// command and its output. The C locale keeps messages parseable.
func run(ctx context.Context, env []string, bin string, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "LC_ALL=C", "LANG=C"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return out.Bytes(), errb.Bytes(), ctx.Err()
		}
		msg := strings.TrimSpace(errb.String() + "\n" + tail(out.String(), 2000))
		err = fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(shortArgs(args), " "), err, msg)
		if strings.Contains(msg, "No space left on device") {
			err = fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
	}
	return out.Bytes(), errb.Bytes(), err
}

// shortArgs keeps error messages readable when an argument is long.
func shortArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if len(a) > 200 {
			a = a[:200] + "..."
		}
		out[i] = a
	}
	return out
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
