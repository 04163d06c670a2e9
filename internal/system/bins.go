package system

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/layout"
	"banger/internal/trustfs"
)

// RunBinaries are the programs `system run` starts or that bangerd finds beside
// itself: the helper, the daemon, what bangerd puts into guests, and the CLI that
// banger's ssh_config runs as its ProxyCommand (as the owner).
var RunBinaries = []string{"banger-helper", "bangerd", "banger-agent", "banger-init", "banger"}

// InstallRunBinaries copies the helper (helperSrc), bangerd (daemonSrc) and the
// agent and init found beside bangerd into ROOT/bin (root's, 0755), and returns
// the paths of the helper and bangerd there. bangerd runs as the owner, who may not be able to
// enter the directory banger was built in (a checkout in root's 0700 home): from
// ROOT/bin it can run bangerd, and bangerd finds the agent and init beside itself.
// Each source must be a root-owned binary in directories only root can change
// (trustfs): root copies it into a root-owned place and runs the helper from there.
// A missing agent, init or CLI is skipped (bangerd then says what is missing); a
// missing helper or daemon is an error. Each file is written under a temporary
// name and renamed into place, so a running bangerd's binary is never rewritten.
func InstallRunBinaries(l layout.Layout, helperSrc, daemonSrc string) (helper, daemon string, err error) {
	dir, err := l.OpenBinDir()
	if err != nil {
		return "", "", err
	}
	defer dir.Close()
	beside := filepath.Dir(daemonSrc)
	srcs := map[string]string{
		"banger-helper": helperSrc, "bangerd": daemonSrc,
		"banger-agent": filepath.Join(beside, "banger-agent"), "banger-init": filepath.Join(beside, "banger-init"),
		"banger": filepath.Join(beside, "banger"),
	}
	for _, name := range RunBinaries {
		src := srcs[name]
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) && name != "banger-helper" && name != "bangerd" {
			continue
		}
		bin, err := trustfs.OpenBinary(src)
		if err != nil {
			return "", "", fmt.Errorf("%s is copied into %s and run from there, so it must be root's: %w", src, l.BinDir(), err)
		}
		err = copyBinary(bin, dir, name)
		bin.Close()
		if err != nil {
			return "", "", fmt.Errorf("install %s into %s: %w", name, l.BinDir(), err)
		}
	}
	return filepath.Join(l.BinDir(), "banger-helper"), filepath.Join(l.BinDir(), "bangerd"), nil
}

// copyBinary writes what bin pins to dir/name (0755), through a temporary name.
func copyBinary(bin *trustfs.Binary, dir *os.File, name string) (err error) {
	in, err := os.Open(bin.ExecPath()) // the checked inode, through its descriptor
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := "." + name + ".new"
	_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
	fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o755)
	if err != nil {
		return err
	}
	out := os.NewFile(uintptr(fd), tmp)
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
		}
	}()
	if _, err = io.Copy(out, in); err != nil {
		return err
	}
	if err = out.Chmod(0o755); err != nil { // exactly, whatever the umask
		return err
	}
	if err = out.Sync(); err != nil {
		return err
	}
	return unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name)
}
