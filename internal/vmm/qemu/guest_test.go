package qemu

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"banger/internal/kernel"
	"banger/internal/testutil"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// guest is what the real-boot tests boot: the host's own kernel with banger's
// initramfs (banger-init mounts root=/dev/vda and execs /sbin/banger-agent
// init) and a busybox root filesystem holding the agent.
type guest struct {
	kernel, initrd, root string
}

// newGuest builds the guest once per test. It skips under -short and where
// QEMU, a host kernel with its modules, or the tools to build a root are missing.
func newGuest(t testing.TB) guest {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs under QEMU: skipped with -short")
	}
	for _, tool := range []string{DefaultBinary, "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: needed to boot test guests (apt-get install qemu-system-x86)", tool)
		}
	}
	if _, err := kernel.FindHostKernel(kernel.HostOptions{}); err != nil {
		t.Skipf("no host kernel to boot: %v", err)
	}
	d, err := kernel.DefaultQEMU(context.Background(), kernel.QEMUDefaultRequest{
		InitBinary: testutil.Binary(t, "banger-init"),
		Dir:        t.TempDir(),
	})
	if err != nil {
		t.Fatalf("banger's initramfs for the host kernel: %v", err)
	}
	return guest{
		kernel: d.Kernel.Path,
		initrd: d.Initramfs.Path,
		root:   vmmtest.GuestRoot(t, testutil.Binary(t, "banger-agent")),
	}
}

// spec is a bootable Spec with its own short runtime directory (unix socket
// paths are limited to 107 bytes; t.TempDir's are long) and its own copy of
// the root disk.
func (g guest) spec(t testing.TB) vmm.Spec {
	t.Helper()
	dir := shortDir(t)
	root := filepath.Join(dir, "root.ext4")
	vmmtest.CopyFile(t, g.root, root)
	return vmm.Spec{
		ID:         filepath.Base(dir),
		Name:       "vmmtest",
		CPUs:       1,
		MemoryMiB:  256,
		Kernel:     g.kernel,
		Initrd:     g.initrd,
		Cmdline:    "banger.hostname=vmmtest",
		Root:       vmm.Disk{Path: root, Format: "raw"},
		RunDir:     dir,
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

// testLogger sends the driver's log to t.Log, or nowhere when not verbose.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

var _ io.Writer = tWriter{}

func factory(machine Machine) vmmtest.Factory {
	return func(t *testing.T) vmmtest.Env {
		g := newGuest(t)
		d := New(Options{Machine: machine})
		t.Logf("accelerator: %+v", d.Accel())
		return vmmtest.Env{
			NewDriver: func() vmm.Driver { return New(Options{Machine: machine, Logger: testLogger(t)}) },
			Spec:      g.spec,
		}
	}
}

// TestConformanceMicroVM runs the VMM conformance suite on QEMU's microvm
// machine, under TCG on hosts without hardware virtualisation. Each subtest
// boots a real guest: a few seconds each under TCG, with generous deadlines.
func TestConformanceMicroVM(t *testing.T) { vmmtest.Run(t, factory(MachineMicroVM)) }

// TestConformanceQ35 runs the same suite on the q35 machine (PCI devices,
// SeaBIOS): slower to boot.
func TestConformanceQ35(t *testing.T) { vmmtest.Run(t, factory(MachineQ35)) }
