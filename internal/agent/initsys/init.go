package initsys

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/agent/users"

	"golang.org/x/sys/unix"
)

// Options configure PID 1. Paths default to the real ones; tests running init in
// namespaces point the files that namespaces do not isolate (/etc) elsewhere.
type Options struct {
	Logger *slog.Logger // never nil: the console
	// AgentArgv starts the agent service (control API and SSH) as a child.
	AgentArgv []string
	// CmdlinePath is read for BootConfig (default /proc/cmdline).
	CmdlinePath string
	// EtcDir receives resolv.conf and the hosts entry (default /etc).
	EtcDir string
	// WorkloadPath holds the image's entrypoint (default /etc/banger/init.json).
	WorkloadPath string
	// StatusPath is where the boot phases are published for the agent service's
	// health call (default /run/banger/boot.json).
	StatusPath string
	// StopTimeout is how long processes get between SIGTERM and SIGKILL at
	// shutdown (default 5s).
	StopTimeout time.Duration
	// KeepRootRW skips remounting / read-only at shutdown. Only for tests in
	// namespaces: remounting changes the filesystem's superblock, which a mount
	// namespace does not isolate.
	KeepRootRW bool
}

// BootStatus is what PID 1 publishes at StatusPath.
type BootStatus struct {
	PID1   bool              `json:"pid1"`
	Phases []proto.BootPhase `json:"phases"`
}

// ReadBootStatus reads a BootStatus published by PID 1.
func ReadBootStatus(path string) (BootStatus, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return BootStatus{}, err
	}
	var st BootStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return BootStatus{}, fmt.Errorf("boot status %s: %w", path, err)
	}
	return st, nil
}

// DefaultStatusPath is where PID 1 publishes its boot phases.
const DefaultStatusPath = "/run/banger/boot.json"

// Init is PID 1. Its design: PID 1 itself only sets up, reaps and shuts down; the
// control API and SSH run in a child process (the same binary in service mode).
// That split keeps the one wait4(-1) loop that init must run away from the
// agent's own exec.Cmd.Wait calls, which would otherwise race for exit statuses.
type Init struct {
	o   Options
	log *slog.Logger
	// poweroffReboots is BootConfig.PoweroffReboots, set once the command line
	// was read.
	poweroffReboots bool
	phases          []proto.BootPhase
	mounts          []string // mounted by us, in order
}

// New returns an Init with defaults applied.
func New(o Options) *Init {
	if o.CmdlinePath == "" {
		o.CmdlinePath = "/proc/cmdline"
	}
	if o.EtcDir == "" {
		o.EtcDir = "/etc"
	}
	if o.WorkloadPath == "" {
		o.WorkloadPath = "/etc/banger/init.json"
	}
	if o.StatusPath == "" {
		o.StatusPath = DefaultStatusPath
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 5 * time.Second
	}
	return &Init{o: o, log: o.Logger}
}

// phase runs one boot step, timing it and recording its error.
func (in *Init) phase(name string, f func() error) error {
	start := time.Now()
	err := f()
	p := proto.BootPhase{Name: name, Duration: time.Since(start)}
	if err != nil {
		p.Error = err.Error()
		in.log.Error("boot step failed", "step", name, "err", err)
	} else {
		in.log.Debug("boot step", "step", name, "took", p.Duration)
	}
	in.phases = append(in.phases, p)
	return err
}

// Run is PID 1's life: set up, run the agent and the workload, reap, and shut
// down on request. It returns only if the final reboot(2) fails.
func (in *Init) Run() error {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR, unix.SIGUSR2)
	// ctrl-alt-del becomes SIGINT to us instead of an immediate reboot
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	wl, err := in.setup()
	if err != nil {
		in.log.Error("boot failed; powering off", "err", err)
		return in.shutdown(proto.ActionPoweroff)
	}
	in.publish()
	if wl.Handover != "" {
		in.log.Info("handing over to the image's init", "init", wl.Handover)
		err := unix.Exec(wl.Handover, []string{wl.Handover}, os.Environ())
		in.log.Error("hand-over failed; staying as init", "init", wl.Handover, "err", err)
	}

	agent := in.startAgent()
	workload := 0
	if argv := wl.Argv(); len(argv) > 0 && wl.Handover == "" {
		if workload, err = in.startWorkload(wl); err != nil {
			in.log.Error("workload did not start", "argv", argv, "err", err)
		}
	}
	var restart <-chan time.Time // set while the agent service waits to be restarted
	for {
		select {
		case <-restart:
			restart = nil
			agent = in.startAgent()
		case sig := <-sigs:
			switch sig {
			case unix.SIGCHLD:
				for _, ex := range reapAll() {
					switch {
					case ex.pid == agent:
						in.log.Error("agent service exited; restarting it in 1s", "status", ex.describe())
						agent, restart = 0, time.After(time.Second)
					case ex.pid == workload:
						in.log.Info("workload exited; powering off", "status", ex.describe())
						return in.shutdown(proto.ActionPoweroff)
					}
				}
			case unix.SIGTERM, unix.SIGPWR:
				return in.shutdown(proto.ActionPoweroff)
			case unix.SIGINT, unix.SIGUSR2:
				// ctrl-alt-del, or the agent service asking for a reboot
				return in.shutdown(proto.ActionReboot)
			}
		}
	}
}

// ShutdownSignal is the signal the agent service sends PID 1 for an action.
func ShutdownSignal(action string) syscall.Signal {
	if action == proto.ActionReboot {
		return unix.SIGUSR2
	}
	return unix.SIGTERM
}

// setup runs the boot steps. Mounting is must-succeed; the rest log and continue,
// so that a guest with, say, a broken network is still reachable over the control
// channel to find out why.
func (in *Init) setup() (Workload, error) {
	var required error
	_ = in.phase("mount", func() error {
		mounted, optional, req := mountAll(defaultMounts())
		in.mounts, required = mounted, req
		return errors.Join(req, optional)
	})
	if required != nil {
		return Workload{}, required
	}
	_ = in.phase("dev", func() error { return devLinks("/dev") })
	var cfg BootConfig
	_ = in.phase("config", func() error {
		b, err := os.ReadFile(in.o.CmdlinePath)
		if err != nil {
			return err
		}
		cfg, err = ParseCmdline(string(b))
		return err
	})
	in.poweroffReboots = cfg.PoweroffReboots
	if cfg.GrowRoot {
		// log-and-continue: a root that stays small is still a working guest
		_ = in.phase("growroot", func() error {
			g, err := GrowFS("/")
			if err != nil {
				return err
			}
			in.log.Info("root filesystem grown", "device", g.Device, "device_bytes", g.DeviceBytes, "before", g.Before, "after", g.After)
			return nil
		})
	}
	if cfg.Hostname != "" {
		_ = in.phase("hostname", func() error {
			if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
				return fmt.Errorf("sethostname: %w", err)
			}
			if err := writeHostname(in.o.EtcDir, cfg.Hostname); err != nil {
				return err
			}
			return writeHostsEntry(in.o.EtcDir, cfg.Hostname)
		})
	}
	_ = in.phase("network", func() error { return setupNetwork(cfg) })
	_ = in.phase("resolver", func() error { return writeResolvConf(in.o.EtcDir, cfg) })
	_ = in.phase("virtio-ports", func() error {
		_, err := virtioPortLinks("/sys", "/dev")
		return err
	})
	var wl Workload
	_ = in.phase("workload", func() error {
		var err error
		wl, err = LoadWorkload(in.o.WorkloadPath)
		return err
	})
	return wl, nil
}

// publish writes the boot phases for the agent service's health call.
func (in *Init) publish() {
	b, err := json.Marshal(BootStatus{PID1: true, Phases: in.phases})
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(in.o.StatusPath), 0o755); err == nil {
			err = os.WriteFile(in.o.StatusPath, b, 0o644)
		}
	}
	if err != nil {
		in.log.Error("publish boot status", "path", in.o.StatusPath, "err", err)
	}
}

// startAgent starts the agent service; it returns 0 when it could not (the next
// SIGCHLD tick does not retry then, so log loudly: the host will see no agent).
func (in *Init) startAgent() int {
	if len(in.o.AgentArgv) == 0 {
		return 0
	}
	cmd := exec.Command(in.o.AgentArgv[0], in.o.AgentArgv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		in.log.Error("start agent service", "argv", in.o.AgentArgv, "err", err)
		return 0
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release() // reaped by wait4(-1) in Run, not by os/exec
	return pid
}

func (in *Init) startWorkload(wl Workload) (int, error) {
	argv := wl.Argv()
	var db users.DB
	u := users.User{Name: "root", Home: "/root", Shell: "/bin/sh"}
	if wl.User != "" {
		var err error
		if u, err = db.Lookup(wl.User); err != nil {
			return 0, err
		}
	}
	env := users.MergeEnv(u.BaseEnv(), wl.Env)
	path, err := users.LookPath(argv[0], env)
	if err != nil {
		return 0, err
	}
	dir := wl.WorkDir
	if dir == "" {
		dir = "/"
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: dir, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: u.Credential()}}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	in.log.Info("workload started", "argv", argv, "pid", cmd.Process.Pid)
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

type exited struct {
	pid int
	ws  unix.WaitStatus
}

func (e exited) describe() string {
	if e.ws.Signaled() {
		return "killed by " + unix.SignalName(e.ws.Signal())
	}
	return fmt.Sprintf("exit %d", e.ws.ExitStatus())
}

// reapAll collects every child that has exited: orphans reparented to PID 1 too.
func reapAll() []exited {
	var out []exited
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return out
		}
		out = append(out, exited{pid, ws})
	}
}

// shutdown stops every process (SIGTERM, then SIGKILL after StopTimeout), syncs,
// unmounts what it mounted, remounts / read-only and powers off or reboots.
func (in *Init) shutdown(action string) error {
	in.log.Info("shutting down", "action", action)
	_ = unix.Kill(-1, unix.SIGTERM) // every process but PID 1
	if !waitNoChildren(in.o.StopTimeout) {
		in.log.Info("processes still running after SIGTERM; killing them", "timeout", in.o.StopTimeout)
		_ = unix.Kill(-1, unix.SIGKILL)
		waitNoChildren(2 * time.Second)
	}
	unix.Sync()
	for i := len(in.mounts) - 1; i >= 0; i-- {
		switch in.mounts[i] {
		case "/proc", "/sys", "/dev", "/dev/pts":
			continue // still needed by the steps below; they go away with the kernel
		}
		if err := unix.Unmount(in.mounts[i], unix.MNT_DETACH); err != nil {
			in.log.Debug("unmount", "target", in.mounts[i], "err", err)
		}
	}
	if !in.o.KeepRootRW {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			in.log.Error("remount / read-only", "err", err)
		}
	}
	unix.Sync()
	err := unix.Reboot(rebootCmd(action, in.poweroffReboots))
	return fmt.Errorf("reboot(2) %s: %w", action, err)
}

// waitNoChildren reaps until no child is left or timeout passes; it reports
// whether all are gone.
func waitNoChildren(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			return true
		}
		if pid > 0 {
			continue
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rebootCmd is reboot(2)'s command for a shutdown action: a power-off, unless the
// host asked for power-offs to be reboots (banger.poweroff=reboot, Firecracker).
func rebootCmd(action string, poweroffReboots bool) int {
	if action == proto.ActionReboot || poweroffReboots {
		return unix.LINUX_REBOOT_CMD_RESTART
	}
	return unix.LINUX_REBOOT_CMD_POWER_OFF
}
