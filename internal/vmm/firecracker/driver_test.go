package firecracker_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
	"banger/internal/vmm/process"
	"banger/internal/vmm/vmmtest"
)

func TestAvailable(t *testing.T) {
	f := newFakeKit(t)
	ctx := context.Background()
	kvmMissing := func() error { return errors.New("no KVM here") }
	tests := []struct {
		name string
		o    firecracker.DriverOptions
		want string // "" for available
	}{
		{"fake firecracker", f.directOptions(t), ""},
		{"no KVM", func() firecracker.DriverOptions { o := f.directOptions(t); o.CheckKVM = kvmMissing; return o }(), "no KVM here"},
		{"missing binary", firecracker.DriverOptions{Binary: "/nonexistent/firecracker", CheckKVM: noKVMCheck}, "not found"},
		// echo runs, but is not Firecracker
		{"not firecracker", firecracker.DriverOptions{Binary: "/bin/echo", CheckKVM: noKVMCheck}, `not "Firecracker v...`},
		{"jailer missing", firecracker.DriverOptions{Binary: f.self, CheckKVM: noKVMCheck,
			Jailer: &firecracker.JailerOptions{Binary: "/nonexistent/jailer", UID: nobody, GID: nobody, Ops: helperOps{}}}, "jailer not found"},
		{"fake jailer", firecracker.DriverOptions{Binary: f.self, CheckKVM: noKVMCheck, Env: f.env("jailer"),
			Jailer: &firecracker.JailerOptions{Binary: f.self, UID: nobody, GID: nobody, Ops: helperOps{}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := firecracker.NewDriver(tt.o).Available(ctx)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Available: %v", err)
				}
				return
			}
			if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Available: %v, want ErrUnavailable mentioning %q", err, tt.want)
			}
		})
	}
}

// TestAvailableJailerNeedsRoot: without privileged ops the jailer path needs
// root, and says so.
func TestAvailableJailerNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: the in-process jail ops are allowed")
	}
	f := newFakeKit(t)
	d := firecracker.NewDriver(firecracker.DriverOptions{Binary: f.self, CheckKVM: noKVMCheck, Env: f.env("jailer"),
		Jailer: &firecracker.JailerOptions{Binary: f.self, UID: nobody, GID: nobody}})
	if err := d.Available(context.Background()); !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("Available: %v, want ErrUnavailable saying the jailer needs root", err)
	}
}

// helperOps stand in for banger-helper's JailOps: any type but LocalJailOps
// tells Available that the jail's root-only steps are someone else's.
type helperOps struct{ firecracker.LocalJailOps }

func TestCheckKVM(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withVMX := write("cpuinfo-vmx", "processor\t: 0\nflags\t\t: fpu vme vmx sse\n")
	without := write("cpuinfo-nested", "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n")
	for _, tt := range []struct {
		name string
		h    firecracker.HostKVM
		want string
	}{
		{"no vmx or svm", firecracker.HostKVM{CPUInfo: without, Device: "/dev/null"}, "neither vmx nor svm"},
		{"no cpuinfo", firecracker.HostKVM{CPUInfo: filepath.Join(dir, "none")}, "cannot read the CPU's flags"},
		{"no device", firecracker.HostKVM{CPUInfo: withVMX, Device: filepath.Join(dir, "kvm")}, "load kvm_intel or kvm_amd"},
		{"not KVM", firecracker.HostKVM{CPUInfo: withVMX, Device: "/dev/null"}, "does not answer as KVM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := firecracker.CheckKVM(tt.h)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckKVM: got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestStartRejectsBadSpecs: what Firecracker would refuse is refused before
// anything runs, with every problem named.
func TestStartRejectsBadSpecs(t *testing.T) {
	f := newFakeKit(t)
	for _, tt := range []struct {
		name string
		edit func(*vmm.Spec)
		want []string
	}{
		{"qcow2 root", func(s *vmm.Spec) { s.Root.Format = "qcow2" }, []string{"is qcow2: Firecracker reads raw images only"}},
		{"another root device", func(s *vmm.Spec) { s.Cmdline = "root=/dev/sda1 rw" }, []string{`"root=/dev/sda1"`, "leave root= out"}},
		{"no vsock CID", func(s *vmm.Spec) { s.VsockCID = 0 }, []string{"vsock CID 0"}},
		{"too many CPUs and no memory", func(s *vmm.Spec) { s.CPUs, s.MemoryMiB = 33, 0 }, []string{"cpus 33", "memory 0 MiB"}},
		{"bad MAC", func(s *vmm.Spec) { s.MAC = "06:00" }, []string{`mac "06:00"`}},
		{"long tap name", func(s *vmm.Spec) { s.Tap = "tap-much-too-long0" }, []string{`tap name "tap-much-too-long0"`}},
		{"no run dir", func(s *vmm.Spec) { s.RunDir = filepath.Join(s.RunDir, "none") }, []string{"runtime directory"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(t)
			tt.edit(&spec)
			_, err := firecracker.NewDriver(f.directOptions(t)).Start(context.Background(), spec)
			if err == nil {
				t.Fatal("Start succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start: %v\nwant it to mention %q", err, w)
				}
			}
			if _, err := os.Stat(spec.ConsoleLog); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a process was launched (console log: %v)", err)
			}
		})
	}
}

// TestStartFailures: a Firecracker that dies at once, or never answers,
// fails Start with a reason and leaves no process and no socket.
func TestStartFailures(t *testing.T) {
	f := newFakeKit(t)
	dir := t.TempDir()
	hang := filepath.Join(dir, "hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 60\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, binary, want string
	}{
		{"exits at once", "/bin/false", "exited"},
		{"never answers", hang, "not ready"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := f.directOptions(t)
			o.Binary, o.StartTimeout = tt.binary, 500*time.Millisecond
			spec := testSpec(t)
			h, err := firecracker.NewDriver(o).Start(context.Background(), spec)
			if err == nil {
				vmmtest.KillOnCleanup(t, firecracker.NewDriver(o), h)
				t.Fatal("Start succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start: %v, want it to say %q", err, tt.want)
			}
			entries, _ := os.ReadDir(spec.RunDir)
			for _, e := range entries {
				if e.Type() == os.ModeSocket {
					t.Errorf("socket %s left behind", e.Name())
				}
			}
		})
	}
}

// TestBootConfiguration checks what the driver asks of Firecracker, as the
// contract server recorded it, and what the guest's kernel gets.
func TestBootConfiguration(t *testing.T) {
	f := newFakeKit(t)
	journal := filepath.Join(t.TempDir(), "journal")
	o := f.directOptions(t)
	o.Env = append(o.Env, fctest.FakeJournalEnv+"="+journal)
	drv := firecracker.NewDriver(o)
	spec := testSpec(t)
	spec.CPUs, spec.MemoryMiB = 2, 256
	ctx := testCtx(t)
	h, err := drv.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.KillOnCleanup(t, drv, h)
	if _, err := vmmtest.WaitAgent(ctx, drv, h); err != nil {
		t.Fatalf("agent: %v", err)
	}
	want := vmm.Handle{
		Driver: "firecracker", PID: h.PID, PIDStart: h.PIDStart,
		APISocket:   filepath.Join(spec.RunDir, firecracker.APISocketName),
		AgentSocket: filepath.Join(spec.RunDir, firecracker.VsockSocketName),
		AgentPort:   1024, ConsoleLog: spec.ConsoleLog,
	}
	if h != want {
		t.Errorf("handle:\ngot  %+v\nwant %+v", h, want)
	}
	recs, err := fctest.ReadJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	fctest.CheckClean(t, recs)
	var calls []string
	bodies := map[string]map[string]any{}
	for _, r := range recs {
		calls = append(calls, r.Call())
		if r.Body != "" {
			var m map[string]any
			if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
				t.Fatal(err)
			}
			bodies[r.Call()] = m
		}
	}
	wantCalls := []string{"GET /version", "PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs",
		"PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions"}
	if len(calls) < len(wantCalls) || !slices.Equal(calls[:len(wantCalls)], wantCalls) {
		t.Errorf("calls: got %q, want them to start with %q", calls, wantCalls)
	}
	const args = "console=ttyS0 reboot=k panic=1 banger.poweroff=reboot rw banger.hostname=vmmtest"
	for _, tt := range []struct {
		call, field string
		want        any
	}{
		{"PUT /machine-config", "vcpu_count", 2.0},
		{"PUT /machine-config", "mem_size_mib", 256.0},
		{"PUT /boot-source", "kernel_image_path", spec.Kernel},
		{"PUT /boot-source", "boot_args", args},
		{"PUT /drives/rootfs", "path_on_host", spec.Root.Path},
		{"PUT /drives/rootfs", "is_root_device", true},
		{"PUT /drives/rootfs", "is_read_only", false},
		{"PUT /network-interfaces/eth0", "host_dev_name", spec.Tap},
		{"PUT /network-interfaces/eth0", "guest_mac", spec.MAC},
		{"PUT /vsock", "guest_cid", float64(spec.VsockCID)},
		{"PUT /vsock", "uds_path", h.AgentSocket},
		{"PUT /actions", "action_type", "InstanceStart"},
	} {
		if got := bodies[tt.call][tt.field]; got != tt.want {
			t.Errorf("%s %s: got %v, want %v", tt.call, tt.field, got, tt.want)
		}
	}
	// The guest's kernel gets Firecracker's additions once: one root=.
	console, err := os.ReadFile(spec.ConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Command line: " + args + " pci=off root=/dev/vda rw\n"; !strings.Contains(string(console), want) {
		t.Errorf("console: want %q in\n%s", want, console)
	}
	// Firecracker's own log is a file of its own, not the console.
	if _, err := os.Stat(filepath.Join(spec.RunDir, firecracker.LogName)); err != nil {
		t.Errorf("firecracker's log: %v", err)
	}
}

// TestStopResumesPausedVM: a paused guest cannot react to Ctrl+Alt+Del, so
// Stop resumes it first, and the stop is graceful.
func TestStopResumesPausedVM(t *testing.T) {
	f := newFakeKit(t)
	journal := filepath.Join(t.TempDir(), "journal")
	// No agent: only Ctrl+Alt+Del can stop this guest.
	o := f.directOptions(t)
	o.Env = append(o.Env, fctest.FakeJournalEnv+"="+journal, fctest.FakeAgentEnv+"=")
	drv := firecracker.NewDriver(o)
	ctx := testCtx(t)
	h, err := drv.Start(ctx, testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.KillOnCleanup(t, drv, h)
	c := firecracker.NewClient(h.APISocket)
	defer c.Close()
	if err := c.PatchVM(ctx, firecracker.VMPaused); err != nil {
		t.Fatal(err)
	}
	if st, err := drv.State(ctx, h); err != nil || st != vmm.StatePaused {
		t.Fatalf("State of a paused VM: got %q, %v; want paused", st, err)
	}
	t0 := time.Now()
	if err := drv.Stop(ctx, h, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took >= 3*time.Second {
		t.Errorf("Stop took %s: the paused guest was not resumed and asked", took)
	}
	recs, err := fctest.ReadJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	fctest.CheckClean(t, recs)
	var tail []string
	for _, r := range recs[len(recs)-2:] {
		tail = append(tail, r.Call()+" "+r.Body)
	}
	want := []string{`PATCH /vm {"state":"Resumed"}`, `PUT /actions {"action_type":"SendCtrlAltDel"}`}
	if !slices.Equal(tail, want) {
		t.Errorf("last requests: got %q, want %q", tail, want)
	}
}

// TestStopForcedWhenGuestIgnores: a guest that answers neither Ctrl+Alt+Del
// nor the agent is terminated after the timeout, and nothing is left.
func TestStopForcedWhenGuestIgnores(t *testing.T) {
	f := newFakeKit(t)
	o := f.directOptions(t)
	o.Env = append(o.Env, fctest.FakeCtrlAltDelEnv+"=ignore", fctest.FakeAgentEnv+"=")
	drv := firecracker.NewDriver(o)
	ctx := testCtx(t)
	spec := testSpec(t)
	h, err := drv.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.KillOnCleanup(t, drv, h)
	const timeout = time.Second
	t0 := time.Now()
	if err := drv.Stop(ctx, h, timeout); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took < timeout {
		t.Errorf("Stop returned after %s, before its %s timeout", took, timeout)
	}
	if (process.Ref{PID: h.PID, Start: h.PIDStart}).Alive() {
		t.Errorf("pid %d still runs", h.PID)
	}
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind (%v)", p, err)
		}
	}
}

// TestHandleOfAnotherDriver: a Handle is only this driver's to act on.
func TestHandleOfAnotherDriver(t *testing.T) {
	d := firecracker.NewDriver(firecracker.DriverOptions{})
	h := vmm.Handle{Driver: "qemu", PID: 1, PIDStart: 1}
	ctx := testCtx(t)
	if _, err := d.State(ctx, h); err == nil {
		t.Error("State accepted a qemu handle")
	}
	if err := d.Kill(ctx, h); err == nil {
		t.Error("Kill accepted a qemu handle")
	}
	if err := d.Stop(ctx, h, time.Second); err == nil {
		t.Error("Stop accepted a qemu handle")
	}
	if _, err := d.DialAgent(ctx, h); err == nil {
		t.Error("DialAgent accepted a qemu handle")
	}
}

// TestZeroHandle: a handle naming no process is an exited VMM, and ending it
// is a no-op.
func TestZeroHandle(t *testing.T) {
	d := firecracker.NewDriver(firecracker.DriverOptions{})
	ctx := testCtx(t)
	if st, err := d.State(ctx, vmm.Handle{}); err != nil || st != vmm.StateExited {
		t.Errorf("State(zero handle) = %q, %v; want exited", st, err)
	}
	if err := d.Stop(ctx, vmm.Handle{}, time.Second); err != nil {
		t.Errorf("Stop(zero handle): %v", err)
	}
	if err := d.Kill(ctx, vmm.Handle{}); err != nil {
		t.Errorf("Kill(zero handle): %v", err)
	}
}
