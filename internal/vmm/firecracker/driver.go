package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent/client"
	"banger/internal/agent/proto"
	"banger/internal/consolelog"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// DriverName is the name in Handles and configuration.
const DriverName = "firecracker"

// Default executables, looked up in PATH.
const (
	DefaultBinary       = "firecracker"
	DefaultJailerBinary = "jailer"
)

// Files in Spec.RunDir of a Firecracker started directly (under the jailer
// they are in the jail: JailAPISocket, JailVsockSocket, JailLog).
const (
	APISocketName   = "firecracker.sock"
	VsockSocketName = "vsock.sock"
	LogName         = "firecracker.log" // Firecracker's own log (--log-path)
)

// DriverOptions configure a Driver. The zero value runs firecracker from
// PATH directly, as the driver's user.
type DriverOptions struct {
	Binary string // default DefaultBinary
	// Jailer, when set, runs every VM under the jailer (see JailerOptions).
	Jailer *JailerOptions
	Logger *slog.Logger // nil discards
	// StartTimeout bounds Start from launch to InstanceStart (default 30s:
	// Firecracker answers its API within milliseconds).
	StartTimeout time.Duration
	// TermGrace is how long Firecracker gets after SIGTERM before SIGKILL
	// when a graceful stop timed out (default 5s; Firecracker exits at once
	// on SIGTERM).
	TermGrace time.Duration
	// LogLevel is Firecracker's --level: Error, Warning (default), Info,
	// Debug, Trace or Off.
	LogLevel string
	// CheckKVM replaces Available's check of the host's KVM (tests: a fake
	// firecracker needs none). Nil: CheckKVM(HostKVM{}).
	CheckKVM func() error
	// Env is the environment of the processes the driver runs itself
	// (firecracker, and the --version probes of Available); nil inherits
	// the driver's. Tests point it at a fake firecracker.
	Env []string
}

// Driver is the Firecracker vmm.Driver. It holds no per-VM state: a VM is
// found again from its Handle alone, by any Driver value with the same
// options (bangerd after a restart).
//
// A VM is one Firecracker process, launched detached (its own session) so
// that it outlives bangerd; its stdout and stderr, where Firecracker writes
// the guest's serial console, go to Spec.ConsoleLog. Its devices: the root
// disk (raw only) as virtio-block, virtio-net on Spec.Tap, and the hybrid
// vsock device whose host socket is the agent's channel (Handle.AgentSocket,
// port Handle.AgentPort = proto.DefaultVsockPort).
//
// Stop asks twice at once, as the QEMU driver does: SendCtrlAltDel (x86; the
// guest booted with reboot=k reboots, and Firecracker exits on a guest
// reboot) and the agent's reboot call (every architecture). It asks for a
// reboot, not a power-off: on x86 Firecracker has no ACPI power-off, so a
// guest that powers off halts and the process lives on; a reboot ends it.
// After the timeout it sends SIGTERM (Firecracker exits at once, without a
// guest shutdown) and, after TermGrace, SIGKILL.
type Driver struct {
	o   DriverOptions
	log *slog.Logger
}

var _ vmm.Driver = (*Driver)(nil)

// NewDriver returns a Driver with o's defaults applied.
func NewDriver(o DriverOptions) *Driver {
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.TermGrace <= 0 {
		o.TermGrace = 5 * time.Second
	}
	if o.LogLevel == "" {
		o.LogLevel = "Warning"
	}
	if o.Jailer != nil {
		j := *o.Jailer
		if j.Binary == "" {
			j.Binary = DefaultJailerBinary
		}
		if j.ChrootBase == "" {
			j.ChrootBase = DefaultChrootBase
		}
		if j.Ops == nil {
			j.Ops = LocalJailOps{}
		}
		o.Jailer = &j
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{o: o, log: log.With("vmm", DriverName)}
}

// apiCallTimeout bounds one API exchange when the caller's ctx does not.
const apiCallTimeout = 10 * time.Second

// Name is "firecracker".
func (d *Driver) Name() string { return DriverName }

// Available checks that KVM is usable (Firecracker has no emulation to fall
// back on) and that the binary runs: firecracker --version, or under the
// jailer the jailer's --version and, without JailOps, root.
func (d *Driver) Available(ctx context.Context) error {
	check := d.o.CheckKVM
	if check == nil {
		check = func() error { return CheckKVM(HostKVM{}) }
	}
	if err := check(); err != nil {
		return fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	if d.o.Jailer != nil {
		return d.jailAvailable(ctx)
	}
	path, err := exec.LookPath(d.o.Binary)
	if err != nil {
		return fmt.Errorf("%w: %s not found: install Firecracker (a release binary from github.com/firecracker-microvm/firecracker) or set vmm.firecracker in config.toml", vmm.ErrUnavailable, d.o.Binary)
	}
	_, err = d.version(ctx, path, "Firecracker")
	return err
}

// version runs path --version and returns the version its first line names
// after "<product> v".
func (d *Driver) version(ctx context.Context, path, product string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = d.o.Env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s --version: %v: %s", vmm.ErrUnavailable, path, err, lastLines(string(out), 3))
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	v, ok := strings.CutPrefix(first, product+" v")
	if !ok {
		return "", fmt.Errorf("%w: %s --version says %q, not \"%s v...\": is it %s?", vmm.ErrUnavailable, path, first, product, strings.ToLower(product))
	}
	return strings.TrimSpace(v), nil
}

// Start launches Firecracker for spec, configures the microVM and starts it;
// it returns once InstanceStart succeeded. A failure, including ctx ending,
// leaves no process and no socket; the error carries the end of
// Firecracker's log and of the console.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Handle, error) {
	if err := ctx.Err(); err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
	}
	if spec.Root.Format == "" {
		spec.Root.Format = "raw"
	}
	args, err := bootArgs(spec.Cmdline)
	if err := errors.Join(err, validate(spec)); err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.StartTimeout)
	defer cancel()
	if d.o.Jailer != nil {
		return d.startJailed(ctx, spec, args)
	}
	return d.startDirect(ctx, spec, args)
}

func (d *Driver) startDirect(ctx context.Context, spec vmm.Spec, args string) (vmm.Handle, error) {
	h := vmm.Handle{
		Driver:      DriverName,
		APISocket:   filepath.Join(spec.RunDir, APISocketName),
		AgentSocket: filepath.Join(spec.RunDir, VsockSocketName),
		AgentPort:   proto.DefaultVsockPort,
		ConsoleLog:  spec.ConsoleLog,
	}
	logPath := filepath.Join(spec.RunDir, LogName)
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if err := removeStale(p); err != nil {
			return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
		}
	}
	// Firecracker opens its --log-path but does not create it.
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: log: %w", err)
	}
	cmd, err := Firecracker{
		Binary: d.o.Binary, APISocket: h.APISocket, ID: InstanceID(spec.ID),
		LogPath: logPath, Level: d.o.LogLevel,
	}.Command()
	if err != nil {
		return vmm.Handle{}, err
	}
	d.log.Info("starting firecracker", "vm", spec.ID, "boot_args", args)
	d.log.Debug("firecracker command", "vm", spec.ID, "cmd", cmd.String())
	// Firecracker's stdout is the guest's serial console: it goes into the pipe
	// of a consolelog logger, which keeps the log under its cap (and outlives
	// bangerd as Firecracker does), never into a file Firecracker appends to.
	console, err := consolelog.Start(spec.ConsoleLog, spec.ConsoleMaxBytes)
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
	}
	child, err := process.Launch(process.LaunchSpec{Path: cmd.Path, Args: cmd.Args, Env: d.o.Env, Output: console})
	console.Close() // Firecracker has its own copy; the logger ends with it
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: %w", err)
	}
	ref := child.Ref()
	h.PID, h.PIDStart = ref.PID, ref.Start

	c := NewClient(h.APISocket)
	defer c.Close()
	m := NewMachine(MachineDeps{Client: c, Logger: d.log})
	paths := vmPaths{kernel: spec.Kernel, initrd: spec.Initrd, root: spec.Root.Path, vsock: h.AgentSocket}
	if err := d.boot(ctx, m, child.Done(), machineSpec(spec, args, paths), nil); err != nil {
		select {
		case <-child.Done():
			err = fmt.Errorf("exited while starting (%v): %w", child.ExitErr(), err)
		default:
		}
		d.abort(h)
		return vmm.Handle{}, fmt.Errorf("firecracker: %w%s", err, logTails(logPath, spec.ConsoleLog))
	}
	d.log.Info("firecracker running", "vm", spec.ID, "pid", h.PID)
	return h, nil
}

// boot waits for the API, configures the microVM and starts it.
// afterConfigure, when set, runs between the two (the jailer path makes the
// vsock socket reachable there).
func (d *Driver) boot(ctx context.Context, m *Machine, exited <-chan struct{}, ms MachineSpec, afterConfigure func(context.Context) error) error {
	if err := m.Client().WaitReady(ctx, exited); err != nil {
		return err
	}
	if err := m.Configure(ctx, ms); err != nil {
		return err
	}
	if afterConfigure != nil {
		if err := afterConfigure(ctx); err != nil {
			return err
		}
	}
	return m.Start(ctx)
}

// abort ends a Firecracker whose start failed, waits for it to go and
// removes its sockets (and its jail).
func (d *Driver) abort(h vmm.Handle) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ref := process.Ref{PID: h.PID, Start: h.PIDStart}
	if err := d.signaller(h)(ctx, ref, unix.SIGKILL); err != nil {
		d.log.Error("kill firecracker after a failed start", "pid", h.PID, "err", err)
	}
	if err := process.Wait(ctx, ref); err != nil {
		d.log.Error("firecracker did not exit after SIGKILL", "pid", h.PID, "err", err)
	}
	if err := d.cleanup(ctx, h); err != nil {
		d.log.Error("clean up after a failed start", "pid", h.PID, "err", err)
	}
}

// State is StateExited when the process is gone (or its PID is another
// process's now), else what GET / says: running, or paused for every other
// state (Paused; "Not started" cannot outlive a Start, which kills on failure).
func (d *Driver) State(ctx context.Context, h vmm.Handle) (vmm.State, error) {
	ref, err := refOf(h)
	if err != nil {
		return "", err
	}
	if !ref.Alive() {
		return vmm.StateExited, nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	c := NewClient(h.APISocket)
	defer c.Close()
	info, err := c.InstanceInfo(ctx)
	if err != nil {
		if !ref.Alive() { // it exited while we asked
			return vmm.StateExited, nil
		}
		return "", fmt.Errorf("firecracker pid %d: %w", h.PID, err)
	}
	if info.State == "Running" {
		return vmm.StateRunning, nil
	}
	return vmm.StatePaused, nil
}

// DialAgent connects to the agent's vsock port through the hybrid vsock
// socket. Every connection is a stream of its own. While nothing listens in
// the guest (it is booting) the error wraps client.ErrAgentNotListening.
func (d *Driver) DialAgent(ctx context.Context, h vmm.Handle) (net.Conn, error) {
	ref, err := refOf(h)
	if err != nil {
		return nil, err
	}
	if !ref.Alive() {
		return nil, fmt.Errorf("firecracker pid %d is not running: start the VM first", h.PID)
	}
	port := h.AgentPort
	if port == 0 {
		port = proto.DefaultVsockPort
	}
	conn, err := client.DialHybridVsock(ctx, h.AgentSocket, port)
	if err != nil {
		return nil, fmt.Errorf("firecracker pid %d: agent: %w", h.PID, err)
	}
	return conn, nil
}

// refOf names h's process. A Handle of another driver is refused; one
// without a PID names nothing, which reads as an exited VMM.
func refOf(h vmm.Handle) (process.Ref, error) {
	if h.Driver != "" && h.Driver != DriverName {
		return process.Ref{}, fmt.Errorf("firecracker: handle belongs to the %q driver", h.Driver)
	}
	return process.Ref{PID: h.PID, Start: h.PIDStart}, nil
}
