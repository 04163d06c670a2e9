package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
)

// TestVMLifecycle is the main job, end to end: image → vm run → agent ready →
// the real dig resolves NAME.vm → real OpenSSH `ssh NAME.vm` with strict host key
// checking → the guest reaches a server in another namespace through NAT → a file
// survives stop and start → a published port reaches a server in the guest → rm
// leaves nothing behind.
func TestVMLifecycle(t *testing.T) {
	e := newEnv(t, 2)
	remote := newRemote(t, e)

	web := e.vmRun("web", "-p", "18080:8080", "--timings", "--disk", "512M")
	if !strings.HasPrefix(web.IP, e.prefix) || web.State != "running" || web.Timings == nil || web.Timings.AgentReady <= 0 {
		t.Fatalf("vm run = %+v; want a running VM in %s0/24 with timings", web, e.prefix)
	}
	if web.Disk.Strategy == "" || web.Tap == "" || web.VsockCID == 0 {
		t.Errorf("vm = %+v; want its disk strategy, tap and CID recorded", web)
	}

	// The VM is shown by its image's name, and its published port with the address
	// it listens on (loopback unless asked otherwise); the guest's /etc/hostname
	// agrees with its hostname.
	if !strings.HasPrefix(web.ImageName, "busybox") || len(web.Published) != 1 || web.Published[0] != "127.0.0.1:18080 → 8080/tcp" {
		t.Errorf("vm run: image name %q, published %q; want busybox and [127.0.0.1:18080 → 8080/tcp]", web.ImageName, web.Published)
	}
	if out := e.must("vm", "ls"); !strings.Contains(out, " "+web.ImageName+" ") {
		t.Errorf("vm ls does not name the image:\n%s", out)
	}
	if out := e.must("vm", "inspect", "web"); !strings.Contains(out, "127.0.0.1:18080 → 8080/tcp") {
		t.Errorf("vm inspect does not show where the port is published:\n%s", out)
	}
	if out := e.must("vm", "exec", "web", "--", "cat", "/etc/hostname"); strings.TrimSpace(out) != "web" {
		t.Errorf("guest /etc/hostname = %q, want web", out)
	}

	// --disk grew the root disk and, inside the guest, its filesystem.
	if web.Disk.SizeBytes != 512<<20 {
		t.Errorf("disk size = %d, want 512 MiB", web.Disk.SizeBytes)
	}
	if out := e.must("vm", "exec", "web", "--", "df", "-m", "/"); !dfAtLeast(out, 400) {
		t.Errorf("guest root filesystem did not grow to ~512M:\n%s", out)
	}

	// The real dig resolves the name through banger's DNS.
	if got := strings.TrimSpace(e.inNS("dig", "@"+e.gateway, "-p", "5353", "+short", "web.vm")); got != web.IP {
		t.Errorf("dig web.vm = %q, want %s", got, web.IP)
	}

	// Real OpenSSH as the owner, plain `ssh NAME.vm` through banger's ssh_config,
	// with strict host key checking and no prompt.
	cfg := filepath.Join(e.root, "state/ssh/ssh_config")
	out, err := e.asOwner("ssh", "-F", cfg, "-o", "BatchMode=yes", "web.vm", "uname", "-a")
	if err != nil || !strings.Contains(out, "Linux web ") {
		t.Fatalf("ssh web.vm uname -a: %v\n%s", err, out)
	}
	// ... and with the CLI wrapper.
	if out, err := e.asOwner(filepath.Join(e.bin, "banger"), "--root", e.root, "vm", "ssh", "web", "--", "hostname"); err != nil || strings.TrimSpace(out) != "web" {
		t.Errorf("banger vm ssh: %v\n%s", err, out)
	}

	// The guest reaches a server in a separate namespace through NAT, and sees the
	// host's address there, not its own.
	out = e.must("vm", "exec", "web", "--", "wget", "-qO-", "http://"+remote.addr+":8000/hello.txt")
	if !strings.Contains(out, "hello from remote") {
		t.Errorf("guest → remote through NAT: %q", out)
	}
	// The guest resolves names through banger's DNS (gateway:53, redirected).
	if out := e.must("vm", "exec", "web", "--", "nslookup", "web.vm"); !strings.Contains(out, web.IP) {
		t.Errorf("guest nslookup web.vm:\n%s", out)
	}

	// exec: exit codes, stdin, env.
	if _, err := e.banger("vm", "exec", "web", "--", "sh", "-c", "exit 3"); exitCode(err) != 3 {
		t.Errorf("vm exec exit 3: got exit %d (%v)", exitCode(err), err)
	}

	// A published port reaches a server in the guest.
	e.must("vm", "exec", "web", "--", "sh", "-c", "mkdir -p /www && echo published-ok > /www/index.html && httpd -p 8080 -h /www")
	if out := e.inNS("busybox", "wget", "-qO-", "http://127.0.0.1:18080/"); !strings.Contains(out, "published-ok") {
		t.Errorf("published port 18080 → guest 8080: %q", out)
	}

	// cp both ways.
	local := filepath.Join(e.root, "note.txt")
	if err := os.WriteFile(local, []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("vm", "cp", local, "web:/root/")
	e.must("vm", "cp", "web:/root/note.txt", filepath.Join(e.root, "back.txt"))
	if b, _ := os.ReadFile(filepath.Join(e.root, "back.txt")); string(b) != "copied in\n" {
		t.Errorf("cp round trip = %q", b)
	}

	// A file written in the guest survives stop and start.
	e.must("vm", "exec", "web", "--", "sh", "-c", "echo persisted > /root/marker && sync")
	e.must("vm", "stop", "web")
	if v := e.vm("web"); v.State != "stopped" || v.PID != 0 {
		t.Errorf("after stop: state %s pid %d", v.State, v.PID)
	}
	if got := strings.TrimSpace(e.inNS("dig", "@"+e.gateway, "-p", "5353", "+short", "web.vm")); got != "" {
		t.Errorf("a stopped VM still resolves: %q", got)
	}
	e.must("vm", "start", "web")
	if out := e.must("vm", "exec", "web", "--", "cat", "/root/marker"); strings.TrimSpace(out) != "persisted" {
		t.Errorf("after restart the file reads %q", out)
	}
	if out := e.must("vm", "logs", "web"); !strings.Contains(out, "Linux version") {
		t.Errorf("vm logs has no kernel boot lines:\n%.500s", out)
	}

	// wait, restart and kill.
	if out := e.must("vm", "wait", "web"); !strings.Contains(out, web.IP) {
		t.Errorf("vm wait web: %q", out)
	}
	e.must("vm", "restart", "web")
	if out := e.must("vm", "exec", "web", "--", "cat", "/root/marker"); strings.TrimSpace(out) != "persisted" {
		t.Errorf("after vm restart the file reads %q", out)
	}
	e.must("vm", "kill", "web")
	if v := e.vm("web"); v.State != "stopped" || v.PID != 0 || v.Tap != "" {
		t.Errorf("after kill: state %s pid %d tap %q; want stopped and released", v.State, v.PID, v.Tap)
	}

	// vm run -- CMD exits with the command's code, and --rm removes the VM after.
	if _, err := e.banger("vm", "run", "--rm", "--name", "once", "--memory", "256M", "busybox", "--", "sh", "-c", "exit 4"); exitCode(err) != 4 {
		t.Errorf("vm run --rm -- exit 4: exit %d (%v)", exitCode(err), err)
	}
	if out, err := e.banger("vm", "inspect", "once"); err == nil {
		t.Errorf("vm run --rm left the VM:\n%s", out)
	}

	e.must("vm", "rm", "-f", "web")
	if got := strings.TrimSpace(e.inNS("dig", "@"+e.gateway, "-p", "5353", "+short", "web.vm")); got != "" {
		t.Errorf("a removed VM still resolves: %q", got)
	}
	e.assertNothingLeaked()
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// remote is a server in a second namespace, reachable from banger's namespace
// over a veth pair, standing in for the internet.
type remote struct{ addr string }

func newRemote(t *testing.T, e *env) remote {
	t.Helper()
	rns := testutil.NetNS(t)
	hostIf, remIf := "up"+testutil.RandHex(2), "rm"+testutil.RandHex(2)
	testutil.Run(t, "ip", "link", "add", hostIf, "netns", e.ns, "type", "veth", "peer", "name", remIf, "netns", rns)
	e.inNS("ip", "addr", "add", "198.18.0.1/30", "dev", hostIf)
	e.inNS("ip", "link", "set", hostIf, "up")
	testutil.Run(t, "ip", "netns", "exec", rns, "ip", "addr", "add", "198.18.0.2/30", "dev", remIf)
	testutil.Run(t, "ip", "netns", "exec", rns, "ip", "link", "set", remIf, "up")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from remote\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", rns, "busybox", "httpd", "-f", "-p", "198.18.0.2:8000", "-h", dir)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := exec.Command("ip", "netns", "exec", e.ns, "busybox", "wget", "-qO", "/dev/null", "http://198.18.0.2:8000/hello.txt").Run()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote server not reachable from the host namespace: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return remote{addr: "198.18.0.2"}
}

// dfAtLeast reports whether `df -m` output shows a filesystem of at least mib MiB.
func dfAtLeast(out string, mib int) bool {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		return false
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 2 {
		return false
	}
	n, err := strconv.Atoi(f[1])
	return err == nil && n >= mib
}
