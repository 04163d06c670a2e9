package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/initsys"
	"banger/internal/agent/proto"
)

// nsGuest is banger-agent running as PID 1 of fresh mount, PID, UTS and network
// namespaces, with a veth end named eth0 standing in for the VM's NIC. It is as
// close to a guest boot as a test gets without a VM: the real mounts, netlink
// configuration, hostname, reaping and shutdown path run, each confined to the
// namespaces (the test's files go to a temporary directory, not /etc).
type nsGuest struct {
	dir, netns, hostVeth string
	cmd                  *exec.Cmd
	done                 chan struct{} // closed when cmd has been waited for
	err                  error         // cmd.Wait's result, set before done closes
	sock                 string
}

func requireNamespaces(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creates namespaces and a veth pair: needs root (CI runs as root)")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux, iproute2)", tool)
		}
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startNSGuest boots the agent as init in namespaces. A nil workload means no
// /etc/banger/init.json at all (an image run without a command); extra flags are
// passed to init after the defaults and override them.
func startNSGuest(t *testing.T, workload *initsys.Workload, extra ...string) *nsGuest {
	t.Helper()
	requireNamespaces(t)
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	id := hex.EncodeToString(rb[:])
	// not under /tmp: the guest's init mounts a fresh tmpfs there, hiding it
	dir, err := os.MkdirTemp(nsTestDir(), "banger-ns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	g := &nsGuest{dir: dir, netns: "bgt-" + id, hostVeth: "bgt" + id + "h"}
	bin := filepath.Join(dir, "banger-agent")
	if b, err := os.ReadFile(agentBin); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copy agent binary: %v", err)
	}
	g.sock = filepath.Join(g.dir, "agent.sock")
	mustRun(t, "ip", "netns", "add", g.netns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", g.netns).Run() })
	mustRun(t, "ip", "link", "add", g.hostVeth, "type", "veth", "peer", "name", "bgt"+id+"g", "netns", g.netns)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", g.hostVeth).Run() })
	mustRun(t, "ip", "-n", g.netns, "link", "set", "bgt"+id+"g", "name", "eth0")

	cmdline := filepath.Join(g.dir, "cmdline")
	if err := os.WriteFile(cmdline, []byte("console=ttyS0 banger.hostname=nsguest banger.ip=10.231.7.2/24 banger.gw=10.231.7.1 banger.mtu=1400 banger.dns=10.231.7.1 banger.search=vm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(g.dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	wlPath := filepath.Join(g.dir, "init.json")
	if workload != nil {
		wl, _ := json.Marshal(workload)
		if err := os.WriteFile(wlPath, wl, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"netns", "exec", g.netns,
		"unshare", "--mount", "--pid", "--uts", "--fork", "--propagation", "private",
		bin, "init", "-cmdline", cmdline, "-etc-dir", filepath.Join(g.dir, "etc"), "-workload", wlPath,
		"-keep-root-rw", "-stop-timeout", "2s", "-log-level", "debug",
		"-control-unix", g.sock, "-control-serial", "", "-control-vsock", "0", "-ssh-listen", ""}
	g.cmd = exec.Command("ip", append(args, extra...)...)
	lw := &logWriter{t: t, prefix: "guest: "}
	g.cmd.Stdout, g.cmd.Stderr = lw, lw
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start init in namespaces: %v", err)
	}
	g.done = make(chan struct{})
	go func() { g.err = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		defer lw.stop()
		select {
		case <-g.done:
		default:
			_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
			<-g.done
		}
	})
	return g
}

// wait returns how the namespace's init ended: the kernel kills the init of a PID
// namespace that calls reboot(2) with SIGINT for power-off and SIGHUP for restart,
// and unshare passes the signal on.
func (g *nsGuest) wait(t *testing.T) syscall.Signal {
	t.Helper()
	select {
	case <-g.done:
		var ee *exec.ExitError
		if !errors.As(g.err, &ee) {
			t.Fatalf("init ended with %v, want it killed by the kernel's reboot signal", g.err)
		}
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return ws.Signal()
		}
		if code := ws.ExitStatus(); code > 128 {
			return syscall.Signal(code - 128)
		}
		t.Fatalf("init exited with status %d, want it killed by a signal", ws.ExitStatus())
	case <-time.After(30 * time.Second):
		t.Fatal("init did not shut down within 30s")
	}
	return 0
}

func execOut(t *testing.T, c *client.Client, argv ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: argv, Stdout: &out, Stderr: &errb})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec %q in the guest: %+v %v: %s", argv, st, err, errb.String())
	}
	return out.String()
}

func TestInitInNamespaces(t *testing.T) {
	requireNamespaces(t)
	markDir, err := os.MkdirTemp(nsTestDir(), "banger-ns-mark-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(markDir) })
	mark := filepath.Join(markDir, "workload.pid")
	g := startNSGuest(t, &initsys.Workload{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo $$ > " + mark + "; exec sleep 1000"}})
	c := dialUnix(t, g.sock)

	h, err := c.Health(ctxT(t))
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	if !h.PID1 {
		t.Errorf("health: pid1 false, want true under banger-agent init")
	}
	phases := map[string]proto.BootPhase{}
	for _, p := range h.Boot {
		phases[p.Name] = p
	}
	for _, name := range []string{"mount", "dev", "config", "hostname", "network", "resolver", "virtio-ports", "workload"} {
		p, ok := phases[name]
		if !ok {
			t.Errorf("boot phase %q missing from health (%+v)", name, h.Boot)
		} else if p.Error != "" {
			t.Errorf("boot phase %q failed: %s", name, p.Error)
		}
	}

	if got := execOut(t, c, "cat", "/proc/1/comm"); got != "banger-agent\n" {
		t.Errorf("PID 1 of the guest: got %q, want banger-agent", got)
	}
	if got := execOut(t, c, "hostname"); got != "nsguest\n" {
		t.Errorf("hostname: got %q, want nsguest", got)
	}
	if got := execOut(t, c, "cat", "/sys/class/net/eth0/mtu"); got != "1400\n" {
		t.Errorf("eth0 mtu: got %q, want 1400", got)
	}
	if got := execOut(t, c, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(got, "10.231.7.2/24") {
		t.Errorf("eth0 address: got %q, want 10.231.7.2/24", got)
	}
	if got := execOut(t, c, "ip", "route", "show", "default"); !strings.Contains(got, "default via 10.231.7.1 dev eth0") {
		t.Errorf("default route: got %q, want via 10.231.7.1", got)
	}
	if got := execOut(t, c, "ip", "-o", "link", "show", "lo"); !strings.Contains(got, "UP") {
		t.Errorf("lo: got %q, want it up", got)
	}
	mounts := execOut(t, c, "cat", "/proc/self/mounts")
	for _, want := range []string{"proc /proc proc", "devpts /dev/pts devpts", "tmpfs /run tmpfs", "tmpfs /tmp tmpfs", "tmpfs /dev/shm tmpfs", "cgroup2 /sys/fs/cgroup cgroup2"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("guest mounts lack %q:\n%s", want, mounts)
		}
	}
	resolv, err := os.ReadFile(filepath.Join(g.dir, "etc", "resolv.conf"))
	if err != nil || !strings.Contains(string(resolv), "nameserver 10.231.7.1\nsearch vm\n") {
		t.Errorf("resolv.conf: got %q, %v", resolv, err)
	}
	if hosts, err := os.ReadFile(filepath.Join(g.dir, "etc", "hosts")); err != nil || !strings.Contains(string(hosts), "127.0.1.1 nsguest\n") {
		t.Errorf("hosts: got %q, %v; want an entry for nsguest", hosts, err)
	}
	// a pty from the guest's own devpts instance
	var out bytes.Buffer
	if st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"tty"}, TTY: true, Stdout: &out}); err != nil || st.Code != 0 || !strings.HasPrefix(out.String(), "/dev/pts/") {
		t.Errorf("pty exec in the guest: got %+v %q %v", st, out.String(), err)
	}
	// the workload runs
	waitFile(t, mark)

	// an orphan (its parent exits at once) is reparented to init, which must reap it
	execOut(t, c, "sh", "-c", "sleep 0.2 & exit 0")
	time.Sleep(700 * time.Millisecond)
	if z := execOut(t, c, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null | grep ') Z ' || true"); z != "" {
		t.Errorf("zombies left in the guest: %s", z)
	}

	if err := c.Shutdown(ctxT(t), proto.ActionPoweroff); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if sig := g.wait(t); sig != syscall.SIGINT {
		t.Errorf("end of init: got %v, want the power-off signal SIGINT", sig)
	}
}

func TestInitWorkloadExitPowersOff(t *testing.T) {
	g := startNSGuest(t, &initsys.Workload{Entrypoint: []string{"sh", "-c", "sleep 0.3"}})
	if sig := g.wait(t); sig != syscall.SIGINT {
		t.Errorf("after the workload exited: got %v, want power-off (SIGINT)", sig)
	}
}

func TestInitRebootOnRequest(t *testing.T) {
	g := startNSGuest(t, &initsys.Workload{})
	c := dialUnix(t, g.sock)
	if err := c.Shutdown(ctxT(t), proto.ActionReboot); err != nil {
		t.Fatalf("Shutdown(reboot): %v", err)
	}
	if sig := g.wait(t); sig != syscall.SIGHUP {
		t.Errorf("after reboot: got %v, want the restart signal SIGHUP", sig)
	}
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nsTestDir is where namespace tests keep files the guest must see: anywhere but
// /tmp, which the guest's init covers with its own tmpfs.
func nsTestDir() string {
	if st, err := os.Stat("/var/tmp"); err == nil && st.IsDir() {
		return "/var/tmp"
	}
	wd, _ := os.Getwd()
	return wd
}

// TestInitHandsOver: with a hand-over init in the workload file, PID 1 sets up and
// then becomes that program (it sees itself as PID 1 and the mounts in place).
func TestInitHandsOver(t *testing.T) {
	requireNamespaces(t)
	dir, err := os.MkdirTemp(nsTestDir(), "banger-ns-handover-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mark := filepath.Join(dir, "mark")
	script := filepath.Join(dir, "fake-systemd")
	body := "#!/bin/sh\necho \"pid=$$ $(hostname) $(grep -c ' /dev/pts devpts .*ptmxmode=666' /proc/self/mounts)\" > " + mark + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	g := startNSGuest(t, &initsys.Workload{Handover: script})
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the hand-over init never ran to its end")
	}
	b, err := os.ReadFile(mark)
	if err != nil {
		t.Fatalf("hand-over init did not run: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != "pid=1 nsguest 1" {
		t.Errorf("hand-over init saw %q, want pid=1, the hostname set and its own devpts mounted", got)
	}
}

// TestInitRestartsAgentService: the agent service is the host's way in, so init
// restarts it when it dies.
func TestInitRestartsAgentService(t *testing.T) {
	g := startNSGuest(t, nil)
	c := dialUnix(t, g.sock)
	first := strings.TrimSpace(execOut(t, c, "sh", "-c", "echo $PPID"))
	// kill the service from inside: this very session dies with it
	_, _ = c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"sh", "-c", "kill -9 $PPID; sleep 5"}})
	c.Close()
	c2 := dialUnix(t, g.sock)
	second := strings.TrimSpace(execOut(t, c2, "sh", "-c", "echo $PPID"))
	if first == "" || first == second {
		t.Errorf("agent service pid before and after the kill: %q and %q, want a new process", first, second)
	}
	h, err := c2.Health(ctxT(t))
	if err != nil || !h.PID1 {
		t.Errorf("restarted service health: %+v %v", h, err)
	}
	if err := c2.Shutdown(ctxT(t), proto.ActionPoweroff); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
}
