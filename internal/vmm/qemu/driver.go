// Package qemu is banger's QEMU driver (vmm.Driver): qemu-system-x86_64 on the
// microvm machine (q35 as an option), KVM where the host has hardware
// virtualisation and software emulation (TCG) elsewhere.
//
// One VM is one QEMU process, launched detached (its own session, output in
// RunDir/qemu.log) so that it outlives bangerd, and found again from its Handle
// alone: the driver keeps no per-VM state. Its devices:
//
//	root disk      virtio-blk (raw or qcow2), cache=none,aio=native where the
//	               disk's filesystem takes O_DIRECT, else the host page cache
//	network        virtio-net on the VM's tap (none when Spec.Tap is empty)
//	agent channel  a virtio-serial port named banger.agent, backed by the unix
//	               socket RunDir/agent.sock (Handle.AgentSocket)
//	control        QMP on the unix socket RunDir/qmp.sock (Handle.APISocket)
//	console        the first serial port (ttyS0), written into a pipe whose
//	               reader, a consolelog logger process started beside QEMU and
//	               detached like it, keeps Spec.ConsoleLog under its cap
//
// The driver creates both sockets itself and hands them to QEMU as listening
// descriptors, so they exist, with the driver's owner and mode 0600, before
// QEMU runs. Start returns once QMP answers and reports the guest running.
//
// Stopping: a guest whose init is banger-agent ignores the ACPI power button
// (nothing in it listens), and microvm has no keyboard controller for
// Ctrl+Alt+Del, so Stop asks twice at once: QMP system_powerdown (ACPI, for
// images with their own init) and the agent's shutdown call over the serial
// port. It then waits up to its timeout for QEMU to exit (a powered-off or
// rebooted guest ends QEMU: -no-reboot), then sends SIGTERM (QEMU's clean quit,
// which flushes the disks) and, after a grace period, SIGKILL.
package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/consolelog"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// DriverName is the name in Handles and configuration.
const DriverName = "qemu"

// DefaultBinary is the QEMU the driver runs when Options.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// Files in Spec.RunDir.
const (
	QMPSocketName   = "qmp.sock"
	AgentSocketName = "agent.sock"
	LogName         = "qemu.log" // QEMU's own stdout and stderr
)

// Options configure a Driver. The zero value runs qemu-system-x86_64 from PATH
// on microvm, choosing the accelerator per host.
type Options struct {
	Binary  string  // default DefaultBinary
	Machine Machine // default MachineMicroVM
	Accel   Accel   // default AccelAuto (DetectAccel)
	Host    HostPaths
	Logger  *slog.Logger // nil discards
	// StartTimeout bounds Start's wait for QMP to report the guest running
	// (default 60s: QEMU itself takes well under a second even on a loaded host).
	StartTimeout time.Duration
	// TermGrace is how long QEMU gets to exit after SIGTERM before SIGKILL
	// (default 10s).
	TermGrace time.Duration
}

// Driver is the QEMU vmm.Driver. It holds no per-VM state, so any Driver value
// can stop or inspect a VM another one started, from its Handle alone.
type Driver struct {
	o   Options
	log *slog.Logger
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a Driver with o's defaults applied.
func New(o Options) *Driver {
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.Machine == "" {
		o.Machine = MachineMicroVM
	}
	if o.Accel == "" {
		o.Accel = AccelAuto
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.TermGrace <= 0 {
		o.TermGrace = 10 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{o: o, log: log.With("vmm", DriverName)}
}

// qmpCallTimeout bounds one QMP exchange when the caller's ctx does not: the
// monitor serves one client at a time, and a stuck peer must not hang us.
const qmpCallTimeout = 10 * time.Second

// Name is "qemu".
func (d *Driver) Name() string { return DriverName }

// Machine is the machine type this driver boots.
func (d *Driver) Machine() Machine { return d.o.Machine }

// Accel is the accelerator Start would use now, and why: the configured one, or
// DetectAccel's choice. For `banger doctor`.
func (d *Driver) Accel() AccelChoice {
	switch d.o.Accel {
	case AccelKVM:
		return AccelChoice{AccelKVM, "configured (vmm accel = kvm)"}
	case AccelTCG:
		return AccelChoice{AccelTCG, "configured (vmm accel = tcg)"}
	}
	return DetectAccel(d.o.Host)
}

// Available checks that the QEMU binary runs and has the machine type. TCG runs
// anywhere, so there is no /dev/kvm requirement: Accel says how fast it will be.
func (d *Driver) Available(ctx context.Context) error {
	path, err := exec.LookPath(d.o.Binary)
	if err != nil {
		return fmt.Errorf("%w: %s not found: install QEMU (apt-get install qemu-system-x86)", vmm.ErrUnavailable, d.o.Binary)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-machine", "help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s -machine help: %v: %s", vmm.ErrUnavailable, path, err, lastLines(string(out), 3))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == string(d.o.Machine) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s has no %s machine: install QEMU 6.0 or later, or configure the q35 machine", vmm.ErrUnavailable, path, d.o.Machine)
}

// Start launches QEMU for spec and returns once the guest runs. A failure,
// including ctx ending, leaves no process and no socket; the error carries the
// end of QEMU's own log.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Handle, error) {
	if spec.Root.Format == "" {
		spec.Root.Format = "raw"
	}
	if err := validate(spec); err != nil {
		return vmm.Handle{}, fmt.Errorf("qemu: %w", err)
	}
	accel := d.Accel()
	tsc := 0
	if accel.Accel == AccelTCG {
		khz, src, err := HostTSCkHz(d.o.Host)
		if err != nil {
			d.log.Warn("booting under TCG without tsc_early_khz: the guest may hang calibrating its clock", "vm", spec.ID, "err", err)
		} else {
			tsc = khz
			d.log.Debug("host TSC frequency", "khz", khz, "source", src)
		}
	}
	l := launch{
		machine:  d.o.Machine,
		accel:    accel.Accel,
		spec:     spec,
		cmdline:  kernelCmdline(spec.Cmdline, accel.Accel, tsc),
		directIO: directIO(spec.Root.Path, spec.Root.ReadOnly),
	}
	h := vmm.Handle{
		Driver:      DriverName,
		APISocket:   filepath.Join(spec.RunDir, QMPSocketName),
		AgentSocket: filepath.Join(spec.RunDir, AgentSocketName),
		ConsoleLog:  spec.ConsoleLog,
	}
	logPath := filepath.Join(spec.RunDir, LogName)

	qmpL, err := listenUnix(h.APISocket)
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("qemu: %w", err)
	}
	agentL, err := listenUnix(h.AgentSocket)
	if err != nil {
		qmpL.Close()
		_ = vmm.RemoveSockets(h.APISocket)
		return vmm.Handle{}, fmt.Errorf("qemu: %w", err)
	}
	console, err := consolelog.Start(spec.ConsoleLog, spec.ConsoleMaxBytes)
	if err != nil {
		qmpL.Close()
		agentL.Close()
		_ = vmm.RemoveSockets(h.APISocket, h.AgentSocket)
		return vmm.Handle{}, fmt.Errorf("qemu: %w", err)
	}
	args := l.args()
	d.log.Info("starting qemu", "vm", spec.ID, "accel", accel.Accel, "machine", d.o.Machine, "cmdline", l.cmdline)
	d.log.Debug("qemu arguments", "vm", spec.ID, "args", args)
	child, err := process.Launch(process.LaunchSpec{
		Path:       d.o.Binary,
		Args:       args,
		LogPath:    logPath,
		ExtraFiles: []*os.File{qmpL, agentL, console}, // qmpFD, agentFD, consoleFD
	})
	// QEMU has its own copies now. Ours must go: if QEMU dies, the listening
	// sockets then close with it and a connection attempt fails at once, and
	// the console logger sees the end of its pipe and exits.
	qmpL.Close()
	agentL.Close()
	console.Close()
	if err != nil {
		_ = vmm.RemoveSockets(h.APISocket, h.AgentSocket)
		return vmm.Handle{}, fmt.Errorf("qemu: %w", err)
	}
	ref := child.Ref()
	h.PID, h.PIDStart = ref.PID, ref.Start

	if err := d.waitRunning(ctx, child, h.APISocket); err != nil {
		d.abort(child, h)
		return vmm.Handle{}, fmt.Errorf("qemu: %w%s", err, logTail(logPath))
	}
	d.log.Info("qemu running", "vm", spec.ID, "pid", h.PID)
	return h, nil
}

// waitRunning waits until QMP answers with the guest running, QEMU exits, ctx
// ends or StartTimeout passes.
func (d *Driver) waitRunning(ctx context.Context, child *process.Child, qmpPath string) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.StartTimeout)
	defer cancel()
	// exited is closed before ctx is cancelled for it, so an error seen after
	// a cancellation can tell QEMU's exit from the caller's deadline.
	exited := make(chan struct{})
	go func() {
		select {
		case <-child.Done():
			close(exited)
			cancel()
		case <-ctx.Done():
		}
	}()
	// failed explains err: QEMU's exit when that is the cause. A dying QEMU
	// resets the QMP connection a moment before it can be reaped, so an I/O
	// error (not a deadline) waits up to a second for the exit to show.
	failed := func(what string, err error) error {
		if ctx.Err() == nil {
			t := time.NewTimer(time.Second)
			defer t.Stop()
			select {
			case <-exited:
			case <-t.C:
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("exited while starting (%v)", child.ExitErr())
		default:
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	q, err := dialQMP(ctx, qmpPath)
	if err != nil {
		return failed("waiting for QMP", err)
	}
	defer q.Close()
	delay := 10 * time.Millisecond
	for {
		var st qmpStatus
		err := q.execute(ctx, "query-status", nil, &st)
		switch {
		case err != nil:
			return failed("waiting for the guest to run", err)
		case st.Running:
			return nil
		case st.Status != "prelaunch":
			return fmt.Errorf("the guest is %s, not running", st.Status)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the guest to run (still %s): %w", st.Status, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// abort ends a QEMU whose start failed and removes its sockets.
func (d *Driver) abort(child *process.Child, h vmm.Handle) {
	if err := process.Kill(child.Ref()); err != nil {
		d.log.Error("kill qemu after a failed start", "pid", child.PID(), "err", err)
	}
	select {
	case <-child.Done():
	case <-time.After(30 * time.Second):
		d.log.Error("qemu did not exit after SIGKILL", "pid", child.PID())
	}
	if err := vmm.RemoveSockets(h.APISocket, h.AgentSocket); err != nil {
		d.log.Error("remove sockets after a failed start", "err", err)
	}
}

// State is StateExited when the process is gone (or its PID is another
// process's now), else what QMP says: running, or paused for every status in
// which the guest does not run (paused, io-error, ...).
func (d *Driver) State(ctx context.Context, h vmm.Handle) (vmm.State, error) {
	ref, err := refOf(h)
	if err != nil {
		return "", err
	}
	if !ref.Alive() {
		return vmm.StateExited, nil
	}
	ctx, cancel := context.WithTimeout(ctx, qmpCallTimeout)
	defer cancel()
	var st qmpStatus
	if err := qmpCall(ctx, h.APISocket, "query-status", nil, &st); err != nil {
		if !ref.Alive() { // it exited while we asked
			return vmm.StateExited, nil
		}
		return "", fmt.Errorf("qemu pid %d: %w", h.PID, err)
	}
	if st.Running {
		return vmm.StateRunning, nil
	}
	return vmm.StatePaused, nil
}

// DialAgent connects to the agent's serial port. The port carries one session
// at a time: while another connection holds it, this one is accepted only when
// that one closes.
func (d *Driver) DialAgent(ctx context.Context, h vmm.Handle) (net.Conn, error) {
	ref, err := refOf(h)
	if err != nil {
		return nil, err
	}
	if !ref.Alive() {
		return nil, fmt.Errorf("qemu pid %d is not running: start the VM first", h.PID)
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", h.AgentSocket)
	if err != nil {
		return nil, fmt.Errorf("qemu pid %d: agent socket: %w", h.PID, err)
	}
	return conn, nil
}

// refOf names h's process. A Handle of another driver is refused; one without
// a PID names nothing, which reads as an exited VMM.
func refOf(h vmm.Handle) (process.Ref, error) {
	if h.Driver != "" && h.Driver != DriverName {
		return process.Ref{}, fmt.Errorf("qemu: handle belongs to the %q driver", h.Driver)
	}
	return process.Ref{PID: h.PID, Start: h.PIDStart}, nil
}

// logTail is the end of QEMU's log, formatted to follow an error.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, 0)
	}
	b := make([]byte, max)
	n, _ := f.Read(b)
	s := lastLines(string(b[:n]), 8)
	if s == "" {
		return ""
	}
	return "; qemu said:\n" + s
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
