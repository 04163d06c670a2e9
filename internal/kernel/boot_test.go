package kernel

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The boot tests run the host's own kernel with banger's initramfs under
// QEMU with software emulation (TCG): this machine's /dev/kvm is nested and
// does not boot ordinary kernels. TCG is slow, so the deadlines are
// generous: these check correctness, not speed.

const (
	bootDeadline = 180 * time.Second
	okMarker     = "BANGER-TEST-INIT-OK"
	failMarker   = "BANGER-TEST-INIT-FAIL"
)

// testInitSource is the real init the boot test execs: it checks what
// banger-init promised (PID 1, the root mounted read-write as ext4, /proc,
// /sys and /dev moved into it, the block driver loaded, the arguments),
// prints a verdict on the console and powers off.
const testInitSource = `package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

func main() {
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	var problems []string
	if os.Getpid() != 1 {
		problems = append(problems, fmt.Sprintf("pid %d, want 1", os.Getpid()))
	}
	if len(os.Args) != 2 || os.Args[1] != "hello" {
		problems = append(problems, fmt.Sprintf("args %q, want [/sbin/testinit hello]", os.Args))
	}
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		problems = append(problems, "read /proc/mounts: "+err.Error())
	}
	for _, want := range []string{"/dev/vda / ext4 rw", " /proc proc ", " /sys sysfs ", " /dev devtmpfs "} {
		if !strings.Contains(string(mounts), want) {
			problems = append(problems, fmt.Sprintf("no %q in /proc/mounts", want))
		}
	}
	if err := os.WriteFile("/written", []byte("x"), 0o644); err != nil {
		problems = append(problems, "root not writable: "+err.Error())
	}
	if mods, err := os.ReadFile("/proc/modules"); err != nil || !strings.Contains(string(mods), "virtio_blk ") {
		problems = append(problems, "virtio_blk not loaded")
	}
	if _, err := os.Stat("/init"); err == nil {
		problems = append(problems, "/init of the initramfs is visible in the new root")
	}
	if len(problems) == 0 {
		fmt.Fprintln(con, "` + okMarker + `")
	} else {
		fmt.Fprintln(con, "` + failMarker + `: "+strings.Join(problems, "; "))
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
`

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: needed for this test (apt-get install qemu-system-x86 e2fsprogs)", tool)
		}
	}
}

// goBuild builds a static binary of pkg (a package path, or "." in dir).
func goBuild(t *testing.T, dir, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func buildBangerInit(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "banger-init")
	goBuild(t, "", "banger/cmd/banger-init", out)
	return out
}

// makeRootfs builds an ext4 image holding /sbin/testinit.
func makeRootfs(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module testinit\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(testInitSource), 0o644); err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(tree, "sbin", "testinit"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testinit: %v\n%s", err, b)
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	if b, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "bangerroot", "-d", tree, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, b)
	}
	return img
}

// hostTSCkHz is the host's TSC frequency for tsc_early_khz=: under TCG on
// microvm the guest otherwise hangs calibrating the TSC in most boots.
func hostTSCkHz(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	t.Skip("no cpu MHz in /proc/cpuinfo: cannot set tsc_early_khz for a TCG boot")
	return 0
}

// console collects a VM's serial output and tells when a string appears.
type console struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// bootResult is what a boot showed.
type bootResult struct {
	console string
	exited  bool // QEMU exited by itself (the guest powered off)
}

// bootQEMU boots kernel+initrd with root as /dev/vda on the microvm
// machine, until the guest powers off (QEMU exits) or the deadline. QEMU is
// killed in every case.
func bootQEMU(t *testing.T, kernelPath, initrd, root, cmdline string) bootResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	args := []string{
		"-M", "microvm,acpi=on", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-kernel", kernelPath, "-initrd", initrd,
		"-append", cmdline,
		"-drive", "id=root,file=" + root + ",format=raw,if=none",
		"-device", "virtio-blk-device,drive=root",
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	con := &console{}
	cmd.Stdout, cmd.Stderr = con, con
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	start := time.Now()
	err := cmd.Wait()
	res := bootResult{console: con.String(), exited: ctx.Err() == nil}
	t.Logf("qemu ran %s (exit: %v)", time.Since(start).Round(time.Second), err)
	return res
}

func writeConsoleLog(t *testing.T, name, s string) {
	t.Helper()
	p := filepath.Join(os.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o644); err == nil {
		t.Logf("console log: %s", p)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootSetup builds everything a boot needs once.
type bootSetup struct {
	kernel, initrd, root string
	tsc                  int
}

func setupBoot(t *testing.T) bootSetup {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under TCG: skipped with -short")
	}
	requireTools(t, "qemu-system-x86_64", "mkfs.ext4", "go")
	hk, err := FindHostKernel(HostOptions{})
	if err != nil {
		t.Skipf("no host kernel to boot: %v", err)
	}
	d, err := DefaultQEMU(context.Background(), QEMUDefaultRequest{InitBinary: buildBangerInit(t), Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("DefaultQEMU: %v", err)
	}
	if d.Kernel != hk {
		t.Errorf("DefaultQEMU kernel %+v, want FindHostKernel's %+v", d.Kernel, hk)
	}
	t.Logf("kernel %s, initramfs %s, modules %v", hk.Path, d.Initramfs.Path, d.Initramfs.Modules)
	return bootSetup{kernel: hk.Path, initrd: d.Initramfs.Path, root: makeRootfs(t), tsc: hostTSCkHz(t)}
}

func (s bootSetup) cmdline(extra string) string {
	return fmt.Sprintf("console=ttyS0 tsc_early_khz=%d tsc=reliable panic=-1 %s", s.tsc, extra)
}

// TestBootHostKernelTCG boots the host kernel with banger's initramfs and
// checks that banger-init hands over to the real init as promised, with the
// root named by device and by label.
func TestBootHostKernelTCG(t *testing.T) {
	s := setupBoot(t)
	for _, root := range []string{"root=/dev/vda rw", "root=LABEL=bangerroot"} {
		t.Run(root, func(t *testing.T) {
			res := bootQEMU(t, s.kernel, s.initrd, s.root, s.cmdline(root+" banger.init=/sbin/testinit -- hello"))
			if !strings.Contains(res.console, okMarker) {
				writeConsoleLog(t, "banger-boot-ok.log", res.console)
				if i := strings.Index(res.console, failMarker); i >= 0 {
					t.Fatalf("test init found problems: %s", strings.SplitN(res.console[i:], "\n", 2)[0])
				}
				t.Fatalf("no %q on the console within %s; last lines:\n%s", okMarker, bootDeadline, lastLines(res.console, 40))
			}
			if !res.exited {
				t.Errorf("the guest powered off but QEMU did not exit")
			}
			if testing.Verbose() {
				t.Logf("console:\n%s", lastLines(res.console, 12))
			}
			for _, want := range []string{"banger-init: loaded ", "banger-init: mounted /dev/vda (ext4, rw)", "banger-init: exec /sbin/testinit hello"} {
				if !strings.Contains(res.console, want) {
					t.Errorf("console lacks %q", want)
				}
			}
		})
	}
}

// TestBootFatalPowersOff boots with a root device that never appears: the
// console must name the failed step, and the guest must power off by
// itself rather than hang or panic.
func TestBootFatalPowersOff(t *testing.T) {
	s := setupBoot(t)
	res := bootQEMU(t, s.kernel, s.initrd, s.root, s.cmdline("root=/dev/vdz banger.rootwait=3s"))
	want := "banger-init: FATAL: wait for root device: root device /dev/vdz did not appear"
	if !strings.Contains(res.console, want) {
		writeConsoleLog(t, "banger-boot-fatal.log", res.console)
		t.Fatalf("console lacks %q; last lines:\n%s", want, lastLines(res.console, 40))
	}
	if !strings.Contains(res.console, "block devices seen: vda") {
		t.Errorf("the error does not list the disk that is there (vda)")
	}
	if !res.exited {
		t.Errorf("QEMU still ran at the deadline: the guest did not power off after the fatal error")
	}
	if strings.Contains(res.console, "Kernel panic") {
		t.Errorf("the kernel panicked: banger-init exited instead of powering off")
	}
}
