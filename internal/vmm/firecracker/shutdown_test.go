package firecracker_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

// fakeVMM is a real process: this test binary as a fake firecracker
// (fctest.RunFake), launched with the command line Firecracker.Command builds.
type fakeVMM struct {
	proc    *firecracker.Proc
	machine *firecracker.Machine
	journal string
}

func launchFake(t *testing.T, h *harness, ctrlAltDel string) *fakeVMM {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	specPath, err := fctest.FindSpec(fctest.SpecV1161)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(h.dir, "api.sock")
	cmd, err := firecracker.Firecracker{Binary: self, APISocket: sock, ID: "vm-1"}.Command()
	if err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(h.dir, "journal")
	proc, err := firecracker.Launch(cmd, firecracker.LaunchOptions{
		Stderr:     os.Stderr,
		NewSession: true,
		Env: append(os.Environ(),
			fctest.FakeModeEnv+"=firecracker",
			fctest.FakeSpecEnv+"="+specPath,
			fctest.FakeJournalEnv+"="+journal,
			fctest.FakeCtrlAltDelEnv+"="+ctrlAltDel),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := proc.Wait(ctx); err != nil {
			t.Errorf("fake firecracker %d did not go: %v", proc.PID(), err)
		}
	})
	c := firecracker.NewClient(sock)
	t.Cleanup(c.Close)
	if err := c.WaitReady(testCtx(t), proc.Done()); err != nil {
		t.Fatal(err)
	}
	return &fakeVMM{proc: proc, machine: firecracker.NewMachine(firecracker.MachineDeps{Client: c}), journal: journal}
}

func (f *fakeVMM) records(t *testing.T) []fctest.Record {
	t.Helper()
	recs, err := fctest.ReadJournal(f.journal)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestShutdownGraceful: the guest "reboots" on SendCtrlAltDel and the
// process exits by itself, well before the timeout.
func TestShutdownGraceful(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	vmm := launchFake(t, h, "exit")
	ctx := testCtx(t)
	if err := vmm.machine.Configure(ctx, h.machineSpec()); err != nil {
		t.Fatal(err)
	}
	if err := vmm.machine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	graceful, err := vmm.machine.Shutdown(ctx, 4*time.Second, vmm.proc)
	if err != nil {
		t.Fatal(err)
	}
	if !graceful {
		t.Error("graceful: got false, want true (the process exited on Ctrl+Alt+Del)")
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("shutdown took %v: it waited for the timeout", d)
	}
	if err := vmm.proc.ExitError(); err != nil {
		t.Errorf("exit: got %v, want a clean exit", err)
	}
	recs := vmm.records(t)
	fctest.CheckClean(t, recs)
	if last := recs[len(recs)-1]; last.Call() != "PUT /actions" || last.Body != `{"action_type":"SendCtrlAltDel"}` {
		t.Errorf("last request: got %s %s, want SendCtrlAltDel", last.Call(), last.Body)
	}
}

// TestShutdownKillsAfterTimeout: a guest that ignores Ctrl+Alt+Del is killed
// once the timeout is up.
func TestShutdownKillsAfterTimeout(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	vmm := launchFake(t, h, "ignore")
	ctx := testCtx(t)
	if err := vmm.machine.Configure(ctx, h.machineSpec()); err != nil {
		t.Fatal(err)
	}
	if err := vmm.machine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	begin := time.Now()
	graceful, err := vmm.machine.Shutdown(ctx, timeout, vmm.proc)
	if err != nil {
		t.Fatal(err)
	}
	if graceful {
		t.Error("graceful: got true, want false")
	}
	if d := time.Since(begin); d < timeout {
		t.Errorf("killed after %v, before the %v timeout", d, timeout)
	}
	assertKilled(t, vmm.proc)
	recs := vmm.records(t)
	fctest.CheckClean(t, recs)
	if last := recs[len(recs)-1]; last.Body != `{"action_type":"SendCtrlAltDel"}` {
		t.Errorf("last request: got %s %s, want SendCtrlAltDel", last.Call(), last.Body)
	}
}

// TestShutdownRefusedKillsAtOnce: Firecracker refuses Ctrl+Alt+Del before
// InstanceStart; waiting would be pointless.
func TestShutdownRefusedKillsAtOnce(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	vmm := launchFake(t, h, "exit")
	begin := time.Now()
	graceful, err := vmm.machine.Shutdown(testCtx(t), 4*time.Second, vmm.proc)
	if err != nil || graceful {
		t.Fatalf("got %v, %v; want a forced stop", graceful, err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("took %v: it waited for the timeout", d)
	}
	assertKilled(t, vmm.proc)
	recs := vmm.records(t)
	if last := recs[len(recs)-1]; !last.Rejected() || last.Body != `{"action_type":"SendCtrlAltDel"}` {
		t.Errorf("got %+v, want SendCtrlAltDel refused last", last)
	}
}

// TestShutdownGivesUpWithContext: a caller that stops waiting gets ctx's
// error and the process is not killed.
func TestShutdownGivesUpWithContext(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	vmm := launchFake(t, h, "ignore")
	ctx := testCtx(t)
	if err := vmm.machine.Configure(ctx, h.machineSpec()); err != nil {
		t.Fatal(err)
	}
	if err := vmm.machine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := vmm.machine.Shutdown(short, time.Minute, vmm.proc)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if vmm.proc.State() != nil {
		t.Error("the process was stopped; want it left running")
	}
}

func assertKilled(t *testing.T, p *firecracker.Proc) {
	t.Helper()
	st := p.State()
	if st == nil {
		t.Fatal("process still running")
	}
	ws := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("exit: got %v, want killed by SIGKILL", st)
	}
}

func TestPIDProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p, err := firecracker.OpenPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a live process: got %v, want context.DeadlineExceeded", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	// The exit is seen without reaping (a zombie counts): the waiter here is not the parent.
	if err := p.Wait(testCtx(t)); err != nil {
		t.Fatalf("Wait after kill: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of an exited process: got %v, want nil", err)
	}
	_ = cmd.Wait()
	if _, err := firecracker.OpenPID(cmd.Process.Pid); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("OpenPID of a reaped process: got %v, want os.ErrProcessDone", err)
	}
}
