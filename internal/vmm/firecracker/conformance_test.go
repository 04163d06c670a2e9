package firecracker_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/testutil"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
	"banger/internal/vmm/vmmtest"
)

// Carried to the child process that vmmtest's OutlivesCaller runs: the
// contract journal's path, so the VMs it starts are checked too, and the
// agent binary, so it is not built again.
const (
	journalEnv = "BANGER_FCTEST_JOURNAL"
	agentEnv   = "BANGER_FCTEST_AGENT"
	jailEnv    = "BANGER_FCTEST_JAIL" // the chroot base of TestConformanceJailed
)

// fakeKit is the environment of a driver whose firecracker (and jailer) is
// this test binary: fctest's contract server, every request journaled and
// held to the v1.16.1 spec, with a guest that runs a real banger-agent.
type fakeKit struct {
	self    string
	journal string
	agent   string
	spec    string
	// first is set in the test process that made the kit, unset in a child
	// test process that inherited it: the first one checks the journal.
	first bool
}

func newFakeKit(t *testing.T) fakeKit {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := fctest.FindSpec(fctest.SpecV1161)
	if err != nil {
		t.Fatal(err)
	}
	f := fakeKit{self: self, spec: spec, journal: os.Getenv(journalEnv), agent: os.Getenv(agentEnv)}
	if f.journal == "" {
		f.journal, f.agent, f.first = filepath.Join(t.TempDir(), "journal"), testutil.Binary(t, "banger-agent"), true
		t.Setenv(journalEnv, f.journal)
		t.Setenv(agentEnv, f.agent)
	}
	return f
}

// env is the environment of the fake in mode ("firecracker" or "jailer").
func (f fakeKit) env(mode string, extra ...string) []string {
	return append(append(os.Environ(),
		fctest.FakeModeEnv+"="+mode,
		fctest.FakeSpecEnv+"="+f.spec,
		fctest.FakeJournalEnv+"="+f.journal,
		fctest.FakeAgentEnv+"="+f.agent), extra...)
}

// checkJournal fails the test for every request the fakes refused, and if
// they received none (the test would then prove nothing).
func checkJournal(t *testing.T, path string) {
	t.Helper()
	recs, err := fctest.ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatal("the fake firecracker received no request")
	}
	fctest.CheckClean(t, recs)
	t.Logf("contract: %d requests, none refused", len(recs))
}

// guestFiles are a kernel and a raw root disk: the fake opens them, nothing boots them.
func guestFiles(t testing.TB, dir string) (kernel, root string) {
	t.Helper()
	kernel, root = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "root.ext4")
	for _, p := range []string{kernel, root} {
		if err := os.WriteFile(p, []byte("fctest "+filepath.Base(p)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return kernel, root
}

// testSpec is a Spec with its own short runtime directory, a tap and a MAC
// (the fake checks the names, opens nothing) and the VMService's own
// command line, root=/dev/vda included.
func testSpec(t testing.TB) vmm.Spec {
	t.Helper()
	dir := fctest.ShortTempDir(t)
	kernel, root := guestFiles(t, dir)
	return vmm.Spec{
		ID:         filepath.Base(dir),
		Name:       "vmmtest",
		CPUs:       1,
		MemoryMiB:  128,
		Kernel:     kernel,
		Cmdline:    "root=/dev/vda rw banger.hostname=vmmtest",
		Root:       vmm.Disk{Path: root, Format: "raw"},
		Tap:        "fctest0",
		MAC:        "06:00:0a:00:00:02",
		VsockCID:   10002,
		RunDir:     dir,
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

func noKVMCheck() error { return nil }

// directOptions are the options of a driver running the fake directly.
func (f fakeKit) directOptions(t testing.TB, extraEnv ...string) firecracker.DriverOptions {
	return firecracker.DriverOptions{
		Binary:       f.self,
		Logger:       testLogger(t),
		StartTimeout: 10 * time.Second,
		TermGrace:    2 * time.Second,
		CheckKVM:     noKVMCheck,
		Env:          f.env("firecracker", extraEnv...),
	}
}

// TestConformance runs the VMM conformance suite on the driver against the
// fake firecracker: Start, agent health through hybrid vsock, State, the
// graceful stop (Ctrl+Alt+Del and the agent's reboot), Kill, guest
// shutdowns through the agent, re-attaching from a Handle, outliving the
// starting process, and failed starts that leave nothing.
func TestConformance(t *testing.T) {
	vmmtest.Run(t, func(t *testing.T) vmmtest.Env {
		f := newFakeKit(t)
		if f.first {
			t.Cleanup(func() { checkJournal(t, f.journal) })
		}
		return vmmtest.Env{
			NewDriver:        func() vmm.Driver { return firecracker.NewDriver(f.directOptions(t)) },
			Spec:             testSpec,
			BootTimeout:      20 * time.Second,
			StopTimeout:      10 * time.Second,
			PoweroffKeepsVMM: true,
		}
	})
}

// TestConformanceJailed runs the suite with every VM under the jailer (this
// test binary as a fake jailer, which emulates the chroot by prefixing
// paths), the root-only steps done in process (LocalJailOps). Every jail
// must be gone at the end.
func TestConformanceJailed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the jail's files are chowned to an unprivileged uid and device nodes are made with mknod")
	}
	vmmtest.Run(t, func(t *testing.T) vmmtest.Env {
		f := newFakeKit(t)
		if f.first {
			t.Cleanup(func() { checkJournal(t, f.journal) })
		}
		base := os.Getenv(jailEnv)
		if base == "" {
			base = filepath.Join(fctest.ShortTempDir(t), "jail")
			if err := os.Mkdir(base, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv(jailEnv, base)
			t.Cleanup(func() {
				left, _ := os.ReadDir(filepath.Join(base, filepath.Base(f.self)))
				for _, e := range left {
					t.Errorf("jail %s left behind", e.Name())
				}
			})
		}
		env := f.env("jailer")
		return vmmtest.Env{
			NewDriver: func() vmm.Driver {
				o := f.directOptions(t)
				o.Env = env // for the jailer's --version
				o.Jailer = &firecracker.JailerOptions{
					Binary: f.self, ChrootBase: base, UID: nobody, GID: nobody,
					Ops: firecracker.LocalJailOps{Env: env},
				}
				return firecracker.NewDriver(o)
			},
			Spec:             testSpec,
			BootTimeout:      20 * time.Second,
			StopTimeout:      10 * time.Second,
			PoweroffKeepsVMM: true,
		}
	})
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
