package fctest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/agent/proto"
)

// FakeAgentEnv names a banger-agent binary for a fake firecracker's guest
// (RunFake). With it, InstanceStart "boots" a guest that runs that agent
// (`banger-agent service` on a unix socket, no SSH) and the hybrid vsock
// device reaches it on proto.DefaultVsockPort, so a driver's Health, exec and
// shutdown calls meet a real agent. Without it the guest runs nothing and
// every CONNECT goes unanswered.
const FakeAgentEnv = "FCTEST_AGENT_BIN"

// Guest power states.
const (
	guestOff     = "off"     // before InstanceStart
	guestRunning = "running" // booted
	guestHalted  = "halted"  // powered off: the kernel stopped, the process lives on
)

// agentStopGrace is how long the guest's agent gets to exit on SIGTERM
// before SIGKILL, as an init gives its services.
const agentStopGrace = 2 * time.Second

// guest is a fake firecracker's guest. It behaves as a Linux guest booted by
// Firecracker on x86 with reboot=k, as far as the host can see:
//
//   - the kernel's console lines go to stdout (Firecracker's serial console);
//   - its agent listens on vsock port 1024 once booted;
//   - Ctrl+Alt+Del, or a reboot asked of the agent, stops the agent, prints
//     the kernel's "reboot: Restarting system" and ends the process (exit 0:
//     Firecracker exits on a guest reboot);
//   - a power-off asked of the agent stops it and prints "reboot: Power
//     down", and the process keeps running with a halted guest: Firecracker
//     has no ACPI power-off on x86, so a guest's poweroff does not end it.
//
// The agent runs in service mode, which shuts down through `systemctl
// poweroff|reboot`. The guest puts its own systemctl first in the agent's
// PATH (a shell script signalling this process: SIGUSR1 power off, SIGUSR2
// reboot), so the host's systemctl is never reached.
type guest struct {
	agentBin string
	console  io.Writer
	exit     func(code int) // ends the fake process

	mu    sync.Mutex // guards all following fields
	state string
	dir   string // the agent's runtime directory: control socket, PATH
	agent *exec.Cmd
	// agentDone is closed when the agent has exited and been reaped.
	agentDone chan struct{}
}

func newGuest(agentBin string, console io.Writer, exit func(int)) *guest {
	return &guest{agentBin: agentBin, console: console, exit: exit, state: guestOff}
}

func (g *guest) printf(format string, a ...any) {
	_, _ = fmt.Fprintf(g.console, format+"\n", a...)
}

// boot runs on InstanceStart: the kernel's first lines, then the agent
// (when there is one and a vsock device to reach it).
func (g *guest) boot(b Boot) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != guestOff {
		return
	}
	g.state = guestRunning
	g.printf("[    0.000000] Linux version fctest (a fake Firecracker guest)")
	g.printf("[    0.000000] Command line: %s", b.BootArgs)
	if g.agentBin == "" {
		return
	}
	if b.VsockPath == "" {
		g.printf("fctest: no vsock device: the guest agent could never be reached; not starting it")
		return
	}
	dir := filepath.Join(filepath.Dir(b.VsockPath), "fctest-guest")
	if err := g.startAgentLocked(dir); err != nil {
		g.printf("fctest: guest agent: %v", err)
		return
	}
	g.printf("fctest: guest agent started (pid %d), vsock port %d", g.agent.Process.Pid, proto.DefaultVsockPort)
}

func (g *guest) startAgentLocked(dir string) error {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o700); err != nil {
		return err
	}
	script := fmt.Sprintf(`#!/bin/sh
# fctest: the fake guest's systemctl; banger-agent (service mode) shuts down through it.
case "$1" in
poweroff) exec kill -USR1 %[1]d ;;
reboot) exec kill -USR2 %[1]d ;;
esac
echo "systemctl (fctest): $*: only poweroff and reboot" >&2
exit 1
`, os.Getpid())
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o700); err != nil {
		return err
	}
	cmd := exec.Command(g.agentBin, "service",
		"-control-unix", filepath.Join(dir, "agent.sock"),
		"-control-serial", "",
		"-control-vsock", "0",
		"-ssh-listen", "",
		"-ssh-host-key", filepath.Join(dir, "ssh_host_key"),
		"-authorized-keys", filepath.Join(dir, "authorized_keys"),
		"-boot-status", filepath.Join(dir, "boot.json"),
	)
	cmd.Env = guestEnv(bin)
	cmd.Stdout, cmd.Stderr = g.console, g.console
	// The guest dies with its VMM, however the VMM ends (SIGKILL included).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	g.dir, g.agent, g.agentDone = dir, cmd, done
	return nil
}

// guestEnv is this process's environment with bin first in PATH, so the
// agent's systemctl is the guest's own, never the host's, and without the
// fake's own FCTEST_ variables.
func guestEnv(bin string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "FCTEST_") {
			env = append(env, kv)
		}
	}
	return append(env, "PATH="+bin+":/usr/sbin:/usr/bin:/sbin:/bin")
}

// dial is the guest side of a hybrid vsock CONNECT: the agent's control
// socket on its port, nothing on any other port or while the guest does not run.
func (g *guest) dial(port uint32) (net.Conn, error) {
	g.mu.Lock()
	running, dir := g.state == guestRunning && g.agent != nil, g.dir
	g.mu.Unlock()
	if !running || port != proto.DefaultVsockPort {
		return nil, fmt.Errorf("nothing listens on guest port %d", port)
	}
	return net.Dial("unix", filepath.Join(dir, "agent.sock"))
}

// ctrlAltDel is the guest's answer to SendCtrlAltDel: a running guest
// reboots (and so ends the process); a halted one cannot react.
func (g *guest) ctrlAltDel() { g.shutdown("reboot") }

// shutdown powers the guest off or reboots it. A reboot ends the process.
func (g *guest) shutdown(action string) {
	g.mu.Lock()
	if g.state != guestRunning {
		g.mu.Unlock()
		return
	}
	g.state = guestHalted
	g.stopAgentLocked()
	if action == "reboot" {
		g.printf("reboot: Restarting system")
	} else {
		g.printf("reboot: Power down")
	}
	g.mu.Unlock()
	if action == "reboot" {
		g.exit(0)
	}
}

// stopAgentLocked ends the agent as an init would: SIGTERM, SIGKILL after a
// grace period, and removes its runtime directory.
func (g *guest) stopAgentLocked() {
	if g.agent == nil {
		return
	}
	_ = g.agent.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.agentDone:
	case <-time.After(agentStopGrace):
		_ = g.agent.Process.Kill()
		<-g.agentDone
	}
	if err := os.RemoveAll(g.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.printf("fctest: remove %s: %v", g.dir, err)
	}
	g.agent = nil
}

// kill ends the agent at once, as the process's end does to a guest.
func (g *guest) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.agent == nil {
		return
	}
	_ = g.agent.Process.Kill()
	<-g.agentDone
	_ = os.RemoveAll(g.dir)
	g.agent = nil
}
