package disk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/blockdev"

	"golang.org/x/sys/unix"
)

// Files the FUSE grow makes in the VM's directory for its duration.
const (
	growMountFile = ".grow-export" // the FUSE mountpoint: qemu mounts the disk over a regular file
	growPIDFile   = ".grow.pid"
)

// fuseGrowAvailable says whether growQcow2 can run here: qemu-storage-daemon and
// e2fsprogs installed, /dev/fuse present, and the right to mount FUSE (root, or the
// setuid fusermount3 from the fuse3 package).
func fuseGrowAvailable() error {
	if err := needTools("qemu-storage-daemon", "e2fsck", "resize2fs"); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("/dev/fuse: %v: %w", err, ErrUnavailable)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return fmt.Errorf("fusermount3 is not installed (apt-get install fuse3): %w", ErrUnavailable)
		}
	}
	return nil
}

// growQcow2 grows the ext4 filesystem inside the qcow2 overlay to the overlay's
// virtual size, offline, through a FUSE export of the overlay as a raw file:
// qemu-storage-daemon serves it, e2fsck and resize2fs work on it as on any image,
// and the daemon is stopped (which flushes the overlay and unmounts) before this
// returns. The daemon dies with this process (PDEATHSIG); a mount it leaves after a
// crash is removed by Reap.
func growQcow2(ctx context.Context, overlay, dir string) (err error) {
	mnt := filepath.Join(dir, growMountFile)
	pidFile := filepath.Join(dir, growPIDFile)
	f, err := os.OpenFile(mnt, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("grow qcow2 %s: %w", overlay, err)
	}
	f.Close()
	defer func() {
		if rerr := os.Remove(mnt); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		_ = os.Remove(pidFile) // the daemon removes it itself on a clean exit
	}()

	jsonArg := func(v map[string]any) string { b, _ := json.Marshal(v); return string(b) }
	cmd := exec.Command("qemu-storage-daemon",
		"--blockdev", jsonArg(map[string]any{"driver": "file", "node-name": "file0", "filename": overlay}),
		"--blockdev", jsonArg(map[string]any{"driver": "qcow2", "node-name": "disk0", "file": "file0"}),
		"--export", jsonArg(map[string]any{"type": "fuse", "id": "grow0", "node-name": "disk0", "mountpoint": mnt, "writable": true}),
		"--pidfile", pidFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("grow qcow2 %s: %w", overlay, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	running := true
	defer func() {
		if running {
			_ = cmd.Process.Signal(unix.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		// A clean exit unmounts; a killed daemon leaves a dead mount behind.
		if uerr := unmountFUSE(mnt); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()

	// qemu-storage-daemon documents that it writes its pid file only once every
	// export exists: that file is the readiness signal.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, serr := os.Stat(pidFile); serr == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("grow qcow2 %s: waiting for qemu-storage-daemon: %w", overlay, ctx.Err())
		case werr := <-exited:
			running = false
			return fmt.Errorf("grow qcow2 %s: qemu-storage-daemon exited before its FUSE export was ready: %v: %s", overlay, werr, strings.TrimSpace(out.String()))
		case <-tick.C:
		}
	}
	if err := blockdev.GrowExt4(ctx, mnt); err != nil {
		return fmt.Errorf("grow qcow2 %s: %w", overlay, err)
	}
	return nil
}

// unmountFUSE unmounts mnt if it is a mountpoint (lazily: a dead FUSE server can
// leave it unresponsive). Not being mounted is not an error.
func unmountFUSE(mnt string) error {
	mounted, err := fuseMountsUnder(filepath.Dir(mnt))
	if err != nil {
		return err
	}
	for _, m := range mounted {
		if m != mnt {
			continue
		}
		if os.Geteuid() == 0 {
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", mnt, err)
			}
			return nil
		}
		if out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("fusermount3 -u -z %s: %v: %s", mnt, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// fuseMountsUnder lists the FUSE mountpoints strictly under dir, from
// /proc/self/mountinfo.
func fuseMountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	return parseFUSEMounts(b, dir), nil
}

// parseFUSEMounts reads mountinfo lines ("ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS") and returns FUSE mountpoints under dir.
func parseFUSEMounts(mountinfo []byte, dir string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(postFields) < 1 {
			continue
		}
		fstype := postFields[0]
		if fstype != "fuse" && fstype != "fuseblk" && !strings.HasPrefix(fstype, "fuse.") {
			continue
		}
		if mp := unescapeMountinfo(fields[4]); blockdev.IsUnder(mp, dir) {
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
