// Package vmmtest is the conformance suite every vmm.Driver passes: it boots
// real guests through the driver's interface only and checks the contract of
// internal/vmm — start, agent reachable, state, graceful stop, kill, a guest
// that powers itself off, start failures that leave nothing behind, and a fresh
// driver value managing a VM from its Handle alone (VMMs outlive bangerd).
//
// A driver's test supplies the environment (how to build a driver, a bootable
// Spec) through a Factory and calls Run:
//
//	func TestConformance(t *testing.T) { vmmtest.Run(t, myFactory) }
package vmmtest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/proto"
	"banger/internal/consolelog"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// Env is a driver's test environment.
type Env struct {
	// NewDriver returns a new driver value. The suite calls it more than once:
	// a second value, given only a Handle, must manage a VM the first started.
	NewDriver func() vmm.Driver
	// Spec returns a bootable spec for one new VM: its own RunDir (short:
	// unix socket paths), ConsoleLog and a private, writable copy of the root
	// disk, whose init serves the guest agent on the driver's agent channel.
	// Everything it makes must be removed by t's cleanup.
	Spec func(t testing.TB) vmm.Spec
	// BootTimeout bounds Start to a healthy agent (default 90s: software
	// emulation on a loaded host). This suite checks correctness, not speed.
	BootTimeout time.Duration
	// StopTimeout is what Stop gets for a graceful shutdown (default 60s).
	StopTimeout time.Duration
	// ShutdownMarkers are console lines one of which shows that the guest shut
	// itself down (default: the Linux kernel's "reboot: Power down" and
	// "reboot: Restarting system").
	ShutdownMarkers []string
	// PoweroffKeepsVMM says that a guest's power-off does not end the VMM:
	// the guest halts and the process lives on (Firecracker on x86, which has
	// no ACPI power-off; a reboot does end it). GuestPowersOff then checks
	// that the guest went down (a shutdown marker, no agent) while the VMM
	// runs on, and that Stop ends such a VMM by force within its timeout.
	// The zero value is QEMU's behaviour: power-off ends the VMM.
	PoweroffKeepsVMM bool
}

// Factory makes the environment; it may t.Skip when something the driver
// needs is missing here.
type Factory func(t *testing.T) Env

func (e Env) withDefaults() Env {
	if e.BootTimeout <= 0 {
		e.BootTimeout = 90 * time.Second
	}
	if e.StopTimeout <= 0 {
		e.StopTimeout = 60 * time.Second
	}
	if len(e.ShutdownMarkers) == 0 {
		e.ShutdownMarkers = []string{"reboot: Power down", "reboot: Restarting system"}
	}
	return e
}

// Run runs the conformance suite. Subtests run one after another: each boots a
// VM, and they are meant for small machines.
func Run(t *testing.T, f Factory) {
	env := f(t).withDefaults()
	if env.NewDriver == nil || env.Spec == nil {
		t.Fatal("vmmtest: Env needs NewDriver and Spec")
	}
	if err := env.NewDriver().Available(context.Background()); err != nil {
		t.Skipf("driver unavailable here: %v", err)
	}
	s := &suite{env: env}
	t.Run("StartHealthStop", s.testStartHealthStop)
	t.Run("Kill", s.testKill)
	t.Run("GuestPowersOff", s.testGuestPowersOff)
	t.Run("GuestReboots", s.testGuestReboots)
	t.Run("Reattach", s.testReattach)
	t.Run("OutlivesCaller", s.testOutlivesCaller)
	t.Run("StartFailures", s.testStartFailures)
}

type suite struct{ env Env }

// vm is one booted guest.
type vm struct {
	spec  vmm.Spec
	h     vmm.Handle
	ready time.Duration // Start to a healthy agent
}

// start boots spec's VM and waits for its agent; cleanup kills it whatever
// happens, through the driver and, should that fail, by its PID.
func (s *suite) start(t *testing.T, drv vmm.Driver, spec vmm.Spec) vm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.env.BootTimeout)
	defer cancel()
	t0 := time.Now()
	h, err := drv.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v%s", err, consoleTail(spec.ConsoleLog))
	}
	KillOnCleanup(t, drv, h)
	if h.PID <= 0 || h.PIDStart == 0 {
		t.Errorf("Start returned handle %+v: want a PID and its start time", h)
	}
	if h.Driver != drv.Name() {
		t.Errorf("handle driver %q, want %q", h.Driver, drv.Name())
	}
	if h.ConsoleLog != spec.ConsoleLog {
		t.Errorf("handle console log %q, want the spec's %q", h.ConsoleLog, spec.ConsoleLog)
	}
	if st, err := drv.State(ctx, h); err != nil || st != vmm.StateRunning {
		t.Fatalf("State right after Start: got %q, %v; want %q", st, err, vmm.StateRunning)
	}
	health, err := WaitAgent(ctx, drv, h)
	if err != nil {
		t.Fatalf("agent: %v%s", err, consoleTail(spec.ConsoleLog))
	}
	v := vm{spec: spec, h: h, ready: time.Since(t0)}
	t.Logf("%s: agent %s healthy %s after Start (pid %d)", drv.Name(), health.Version, v.ready.Round(time.Millisecond), h.PID)
	return v
}

// KillOnCleanup makes sure the VMM behind h is gone when t ends: the driver's
// Kill first, then SIGKILL by PID if the process still runs.
func KillOnCleanup(t testing.TB, drv vmm.Driver, h vmm.Handle) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := drv.Kill(ctx, h); err != nil {
			t.Errorf("cleanup: Kill: %v", err)
		}
		ref := process.Ref{PID: h.PID, Start: h.PIDStart}
		if ref.Alive() {
			t.Errorf("cleanup: pid %d still runs after Kill; killing it", h.PID)
			_ = process.Kill(ref)
			_ = process.Wait(ctx, ref)
		}
	})
}

// WaitAgent dials the agent through the driver until it answers a health call
// or ctx ends. The first dial usually succeeds long before the guest runs its
// agent: the handshake simply waits, on a serial port as on vsock.
func WaitAgent(ctx context.Context, drv vmm.Driver, h vmm.Handle) (proto.Health, error) {
	var last error
	delay := 50 * time.Millisecond
	for {
		if st, err := drv.State(ctx, h); err == nil && st == vmm.StateExited {
			return proto.Health{}, errors.New("the VMM exited before its agent answered")
		}
		hl, err := health(ctx, drv, h)
		if err == nil {
			return hl, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return proto.Health{}, errors.Join(ctx.Err(), last)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

func health(ctx context.Context, drv vmm.Driver, h vmm.Handle) (proto.Health, error) {
	conn, err := drv.DialAgent(ctx, h)
	if err != nil {
		return proto.Health{}, err
	}
	c, err := client.Dial(ctx, conn, client.Options{})
	if err != nil {
		return proto.Health{}, err
	}
	defer c.Close()
	return c.Health(ctx)
}

// assertGone checks that h's VMM is gone and left no socket.
func assertGone(t *testing.T, drv vmm.Driver, h vmm.Handle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if st, err := drv.State(ctx, h); err != nil || st != vmm.StateExited {
		t.Errorf("State: got %q, %v; want %q", st, err, vmm.StateExited)
	}
	if (process.Ref{PID: h.PID, Start: h.PIDStart}).Alive() {
		t.Errorf("pid %d still runs", h.PID)
	}
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket %s left behind (%v)", p, err)
		}
	}
	if conn, err := drv.DialAgent(ctx, h); err == nil {
		conn.Close()
		t.Error("DialAgent succeeded on an exited VMM")
	}
}

// assertIdempotentEnd checks that Stop and Kill on an exited VMM succeed.
func assertIdempotentEnd(t *testing.T, drv vmm.Driver, h vmm.Handle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := drv.Stop(ctx, h, time.Second); err != nil {
		t.Errorf("Stop on an exited VMM: %v", err)
	}
	if err := drv.Kill(ctx, h); err != nil {
		t.Errorf("Kill on an exited VMM: %v", err)
	}
}

func (s *suite) assertGraceful(t *testing.T, console string) {
	t.Helper()
	if _, err := os.Stat(console); err != nil {
		t.Errorf("console log: %v", err)
		return
	}
	if !s.consoleShowsShutdown(console) {
		t.Errorf("the console shows no graceful shutdown (none of %q)%s", s.env.ShutdownMarkers, consoleTail(console))
	}
}

// consoleShowsShutdown reports whether the console holds a shutdown marker.
func (s *suite) consoleShowsShutdown(console string) bool {
	// The VMM has exited; its console logger may still be writing the end.
	consolelog.Settle(console, 5*time.Second)
	b, err := os.ReadFile(console)
	if err != nil {
		return false
	}
	for _, m := range s.env.ShutdownMarkers {
		if strings.Contains(string(b), m) {
			return true
		}
	}
	return false
}

func (s *suite) testStartHealthStop(t *testing.T) {
	drv := s.env.NewDriver()
	v := s.start(t, drv, s.env.Spec(t))
	for _, p := range []string{v.h.APISocket, v.h.AgentSocket} {
		if fi, err := os.Lstat(p); p != "" && (err != nil || fi.Mode().Type() != fs.ModeSocket) {
			t.Errorf("socket %s of a running VMM: %v, mode %v", p, err, fi)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.env.StopTimeout+30*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := drv.Stop(ctx, v.h, s.env.StopTimeout); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(t0)
	t.Logf("graceful stop took %s", took.Round(time.Millisecond))
	if took >= s.env.StopTimeout {
		t.Errorf("Stop took %s, the whole timeout (%s): the guest did not shut down when asked", took, s.env.StopTimeout)
	}
	s.assertGraceful(t, v.spec.ConsoleLog)
	assertGone(t, drv, v.h)
	assertIdempotentEnd(t, drv, v.h)
}

func (s *suite) testKill(t *testing.T) {
	drv := s.env.NewDriver()
	v := s.start(t, drv, s.env.Spec(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := drv.Kill(ctx, v.h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	assertGone(t, drv, v.h)
	assertIdempotentEnd(t, drv, v.h)
}

// testGuestPowersOff: the guest shuts down on its own (here through its agent);
// the VMM must exit, the driver must see it, and Stop must then tidy up. Where
// a power-off does not end the VMM (Env.PoweroffKeepsVMM), see haltedGuest.
func (s *suite) testGuestPowersOff(t *testing.T) { s.guestShutdown(t, proto.ActionPoweroff) }

// testGuestReboots: a guest reboot ends the VMM too (Firecracker cannot
// reboot a guest; QEMU runs with -no-reboot to match): restarting is the
// VMService's decision, with a fresh disk and tap state.
func (s *suite) testGuestReboots(t *testing.T) { s.guestShutdown(t, proto.ActionReboot) }

func (s *suite) guestShutdown(t *testing.T, action string) {
	drv := s.env.NewDriver()
	v := s.start(t, drv, s.env.Spec(t))
	ctx, cancel := context.WithTimeout(context.Background(), s.env.StopTimeout)
	defer cancel()
	conn, err := drv.DialAgent(ctx, v.h)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	c, err := client.Dial(ctx, conn, client.Options{})
	if err != nil {
		t.Fatalf("agent handshake: %v", err)
	}
	// The session stays open until the VMM is gone: the agent may not shut
	// down if the host hangs up before its answer is written.
	defer c.Close()
	if err := c.Shutdown(ctx, action); err != nil {
		t.Fatalf("agent shutdown (%s): %v", action, err)
	}
	if action == proto.ActionPoweroff && s.env.PoweroffKeepsVMM {
		s.haltedGuest(ctx, t, drv, v)
		return
	}
	for {
		st, err := drv.State(ctx, v.h)
		if err == nil && st == vmm.StateExited {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the VMM still runs %s after the guest was told to %s (state %q, %v)%s",
				s.env.StopTimeout, action, st, err, consoleTail(v.spec.ConsoleLog))
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.assertGraceful(t, v.spec.ConsoleLog)
	// The VMM is gone; its sockets may not be, until the driver is told.
	if err := drv.Stop(ctx, v.h, time.Second); err != nil {
		t.Fatalf("Stop after the guest's %s: %v", action, err)
	}
	assertGone(t, drv, v.h)
}

// haltedGuest follows a guest that powered off under a VMM that outlives it
// (Env.PoweroffKeepsVMM): the console shows the shutdown, the agent is gone,
// the VMM still runs, and Stop, whose requests nothing in the guest can
// answer now, ends it by force after its timeout.
func (s *suite) haltedGuest(ctx context.Context, t *testing.T, drv vmm.Driver, v vm) {
	t.Helper()
	for !s.consoleShowsShutdown(v.spec.ConsoleLog) {
		if ctx.Err() != nil {
			t.Fatalf("the guest did not power off within %s%s", s.env.StopTimeout, consoleTail(v.spec.ConsoleLog))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, err := drv.State(ctx, v.h); err != nil || st == vmm.StateExited {
		t.Errorf("State after the guest powered off: got %q, %v; want the VMM still there (PoweroffKeepsVMM)", st, err)
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := health(hctx, drv, v.h); err == nil {
		t.Error("the agent still answers after the guest powered off")
	}
	const timeout = 2 * time.Second
	t0 := time.Now()
	if err := drv.Stop(ctx, v.h, timeout); err != nil {
		t.Fatalf("Stop of a halted guest: %v", err)
	}
	if took := time.Since(t0); took < timeout {
		t.Errorf("Stop of a halted guest returned after %s, before its %s timeout: what shut it down?", took, timeout)
	}
	assertGone(t, drv, v.h)
}

// testReattach: a new driver value, knowing only the Handle, sees the VM, talks
// to its agent and stops it, as bangerd does after a restart.
func (s *suite) testReattach(t *testing.T) {
	first := s.env.NewDriver()
	v := s.start(t, first, s.env.Spec(t))
	h := v.h // as stored and read back
	second := s.env.NewDriver()
	ctx, cancel := context.WithTimeout(context.Background(), s.env.StopTimeout+30*time.Second)
	defer cancel()
	if st, err := second.State(ctx, h); err != nil || st != vmm.StateRunning {
		t.Fatalf("State from a fresh driver: got %q, %v; want %q", st, err, vmm.StateRunning)
	}
	if _, err := health(ctx, second, h); err != nil {
		t.Fatalf("agent health through a fresh driver: %v", err)
	}
	if err := second.Stop(ctx, h, s.env.StopTimeout); err != nil {
		t.Fatalf("Stop from a fresh driver: %v", err)
	}
	s.assertGraceful(t, v.spec.ConsoleLog)
	assertGone(t, second, h)
	assertGone(t, first, h)
}

// testStartFailures: a start that fails leaves no process and no socket.
func (s *suite) testStartFailures(t *testing.T) {
	tests := []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		modify func(t *testing.T, sp *vmm.Spec)
	}{
		{"missing kernel", nil, func(t *testing.T, sp *vmm.Spec) {
			sp.Kernel = filepath.Join(t.TempDir(), "no-such-kernel")
		}},
		{"missing root disk", nil, func(t *testing.T, sp *vmm.Spec) {
			sp.Root.Path = filepath.Join(t.TempDir(), "no-such-disk")
		}},
		{"corrupt qcow2 root disk", nil, func(t *testing.T, sp *vmm.Spec) {
			p := filepath.Join(t.TempDir(), "corrupt.qcow2")
			if err := os.WriteFile(p, []byte(strings.Repeat("not a qcow2 image\n", 4096)), 0o600); err != nil {
				t.Fatal(err)
			}
			sp.Root = vmm.Disk{Path: p, Format: "qcow2"}
		}},
		{"context cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv := s.env.NewDriver()
			spec := s.env.Spec(t)
			if tt.modify != nil {
				tt.modify(t, &spec)
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.env.BootTimeout)
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			before := children(t)
			h, err := drv.Start(ctx, spec)
			if err == nil {
				KillOnCleanup(t, drv, h)
				t.Fatalf("Start succeeded, want an error")
			}
			t.Logf("Start failed as expected: %v", err)
			assertNothingLeft(t, spec, before)
		})
	}
}

// assertNothingLeft checks for a VMM process (a new child of ours, or any
// process whose command line names the VM's files) and for sockets in RunDir.
func assertNothingLeft(t *testing.T, spec vmm.Spec, before map[int]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for pid := range children(t) {
			if !before[pid] {
				left = append(left, "child "+cmdline(pid))
			}
		}
		for _, pid := range pidsNaming(t, spec.RunDir, spec.ConsoleLog, spec.Root.Path) {
			left = append(left, cmdline(pid))
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a failed Start left processes running: %q", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	entries, err := os.ReadDir(spec.RunDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type() == fs.ModeSocket {
			t.Errorf("a failed Start left socket %s", filepath.Join(spec.RunDir, e.Name()))
		}
	}
}
