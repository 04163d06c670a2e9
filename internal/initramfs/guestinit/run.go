package guestinit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FatalDelay is how long a fatal error stays on the console before the
// machine powers off: long enough to read on a live console, short enough
// that a failed boot ends promptly instead of hanging.
const FatalDelay = 5 * time.Second

// Main is the whole of banger-init as PID 1: Boot, which on success does not
// return, and on failure the reason printed and the machine powered off.
func Main() {
	log := OpenConsole()
	err := Boot(context.Background(), log)
	PowerOff(log, err, FatalDelay)
}

// Boot runs the boot steps and execs the real init; it returns only on a
// fatal error, labelled with the step that failed. Module loading errors are
// logged and the boot goes on: the module may not be needed on this machine
// (virtio_pci on microvm), and a needed one shows up as a missing root
// device, whose error names the drivers to check.
func Boot(ctx context.Context, log *Console) error {
	if err := mountEarly(log); err != nil {
		return err
	}
	log.OpenKmsg()
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read kernel command line: %w", err)
	}
	cmd := ParseCmdline(string(raw))

	failed := LoadModules(log, ModulesList)
	if len(failed) > 0 {
		log.Printf("modules that failed to load: %s", strings.Join(failed, ", "))
	}

	wctx, cancel := context.WithTimeout(ctx, cmd.RootWait)
	dev, err := Devices{SysBlock: "/sys/class/block", Dev: "/dev"}.WaitRoot(wctx, cmd.Root)
	cancel()
	if err != nil {
		if len(failed) > 0 {
			err = fmt.Errorf("%w (modules that failed to load: %s)", err, strings.Join(failed, ", "))
		}
		return fmt.Errorf("wait for root device: %w", err)
	}
	if err := mountRoot(dev, cmd); err != nil {
		return err
	}
	log.Printf("mounted %s (%s, %s) at %s", dev, cmd.RootFSType, map[bool]string{true: "ro", false: "rw"}[cmd.ReadOnly], NewRoot)
	for _, m := range []string{"/proc", "/sys", "/dev"} {
		if err := moveMount(m, filepath.Join(NewRoot, m)); err != nil {
			return err
		}
	}
	// Freeing the initramfs is a nicety; a failure costs only its memory.
	if err := freeInitramfs(); err != nil {
		log.Printf("free initramfs (continuing): %v", err)
	}
	if err := switchRoot(); err != nil {
		return err
	}
	argv, ok := cmd.InitCommand(func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	})
	if !ok {
		if cmd.Init != "" {
			return fmt.Errorf("exec init: banger.init=%s does not exist in the root filesystem on %s", cmd.Init, dev)
		}
		return fmt.Errorf("exec init: neither %s nor %s exists in the root filesystem on %s: is it a banger image? (set banger.init= to choose another)", DefaultInit, FallbackInit, dev)
	}
	log.Printf("exec %s", strings.Join(argv, " "))
	env := os.Environ()
	if os.Getenv("PATH") == "" {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	err = unix.Exec(argv[0], argv, env)
	return fmt.Errorf("exec init %s: %w", argv[0], err)
}

// mountEarly mounts /proc, /sys and /dev. Without devtmpfs (a kernel built
// without CONFIG_DEVTMPFS) /dev is a tmpfs, and WaitRoot makes the root
// node itself.
func mountEarly(log *Console) error {
	mounts := []struct{ fstype, target string }{{"proc", "/proc"}, {"sysfs", "/sys"}}
	for _, m := range mounts {
		if err := mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
	}
	if err := mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		log.Printf("mount devtmpfs on /dev: %v; using a tmpfs", err)
		if err := mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
			return fmt.Errorf("mount /dev: %w", err)
		}
		for _, n := range []struct {
			name     string
			maj, min uint32
		}{{"console", 5, 1}, {"null", 1, 3}, {"kmsg", 1, 11}} {
			if err := unix.Mknod("/dev/"+n.name, unix.S_IFCHR|0o600, int(unix.Mkdev(n.maj, n.min))); err != nil {
				log.Printf("mknod /dev/%s: %v", n.name, err)
			}
		}
	}
	return nil
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil && !errors.Is(err, unix.EBUSY) {
		return err
	}
	return nil
}

// LoadModules loads each module the list names, in order, with
// finit_module. A module already loaded (EEXIST) is fine. It returns the
// names of those that failed, each failure logged. A missing list means the
// initramfs carries no modules.
func LoadModules(log *Console, list string) (failed []string) {
	f, err := os.Open(list)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		log.Printf("load modules: %v", err)
		return []string{list}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if err := loadModule(p); err != nil {
			log.Printf("load module %s: %v", p, err)
			failed = append(failed, filepath.Base(p))
			continue
		}
		n++
	}
	if err := sc.Err(); err != nil {
		log.Printf("load modules: read %s: %v", list, err)
	}
	log.Printf("loaded %d modules", n)
	return failed
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func mountRoot(dev string, cmd Cmdline) error {
	var flags uintptr
	if cmd.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := os.MkdirAll(NewRoot, 0o755); err != nil {
		return fmt.Errorf("mount root: %w", err)
	}
	if err := unix.Mount(dev, NewRoot, cmd.RootFSType, flags, cmd.RootFlags); err != nil {
		hint := ""
		if errors.Is(err, unix.ENODEV) {
			hint = fmt.Sprintf(": the kernel has no %s driver (build it in or add its module to the initramfs)", cmd.RootFSType)
		}
		return fmt.Errorf("mount root %s (%s, flags %q) on %s: %w%s", dev, cmd.RootFSType, cmd.RootFlags, NewRoot, err, hint)
	}
	return nil
}

// moveMount moves a mount into the new root, making the mount point if the
// root lacks it.
func moveMount(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return fmt.Errorf("move %s to %s: %w", from, to, err)
	}
	if err := unix.Mount(from, to, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to %s: %w", from, to, err)
	}
	return nil
}

// switchRoot makes NewRoot the root, as switch_root(8) does: the initramfs
// (rootfs) cannot be unmounted or pivoted away from, so the new root is
// moved over it and chrooted into.
func switchRoot() error {
	if err := unix.Chdir(NewRoot); err != nil {
		return fmt.Errorf("switch root: chdir %s: %w", NewRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", NewRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: chdir /: %w", err)
	}
	return nil
}

// PowerOff prints err and powers the machine off after delay. PID 1 must not
// exit (the kernel would panic, and with panic=-1 reboot into the same
// failure), so if the power-off call fails it waits forever.
func PowerOff(log *Console, err error, delay time.Duration) {
	log.Printf("FATAL: %v", err)
	log.Printf("powering off in %s", delay)
	time.Sleep(delay)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		log.Printf("power off: %v", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}
