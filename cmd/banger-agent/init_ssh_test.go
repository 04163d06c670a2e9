package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/client"
	"banger/internal/agent/proto"
)

// TestInitNoWorkloadStaysUp: a guest whose image has no /etc/banger/init.json
// (banger vm run IMAGE without a command) keeps running and serving until it is
// stopped, whatever processes come and go in it.
func TestInitNoWorkloadStaysUp(t *testing.T) {
	g := startNSGuest(t, nil)
	c := dialUnix(t, g.sock)
	h, err := c.Health(ctxT(t))
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	for _, p := range h.Boot {
		if p.Name == "workload" && p.Error != "" {
			t.Errorf("workload phase without init.json: got error %q, want none", p.Error)
		}
	}
	// an orphan that init reaps and commands that exit: none of them is a workload
	execOut(t, c, "sh", "-c", "sleep 0.2 & exit 0")
	execOut(t, c, "sleep", "1")
	select {
	case <-g.done:
		t.Fatalf("init ended (%v) in a guest with no workload; want it to keep running", g.err)
	default:
	}
	if _, err := c.Health(ctxT(t)); err != nil {
		t.Fatalf("health after a while: %v", err)
	}
	if err := c.Shutdown(ctxT(t), proto.ActionPoweroff); err != nil {
		t.Fatal(err)
	}
	if sig := g.wait(t); sig != syscall.SIGINT {
		t.Errorf("end of init: got %v, want the power-off signal SIGINT", sig)
	}
}

// TestInitProvisionsSSH: in init mode SSH runs in the service child, which serves
// the provision call too, so a guest booted without a host key starts SSH when the
// host provisions one; a service restarted by init finds the key on disk and
// listens at once.
func TestInitProvisionsSSH(t *testing.T) {
	requireNamespaces(t)
	requireRootAndSSH(t)
	// not under /tmp, which the guest covers with its own tmpfs
	dir, err := os.MkdirTemp(nsTestDir(), "banger-ns-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	home, passwd := filepath.Join(dir, "home"), filepath.Join(dir, "passwd")
	hostKeyPath := filepath.Join(dir, "etc-banger", "ssh_host_ed25519_key")
	identity, knownHosts := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:"+home+":/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	user, err := agenttest.NewKey("user")
	if err != nil {
		t.Fatal(err)
	}
	if err := user.WritePrivate(identity); err != nil {
		t.Fatal(err)
	}
	const port = 2222 // inside the guest's own network namespace: never taken
	if err := os.WriteFile(knownHosts, []byte(agenttest.KnownHostsLine("127.0.0.1", port, host.Signer.PublicKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startNSGuest(t, nil, "-ssh-listen", fmt.Sprintf("127.0.0.1:%d", port), "-ssh-host-key", hostKeyPath,
		"-authorized-keys", filepath.Join(dir, "etc-banger", "authorized_keys"), "-passwd", passwd, "-group", passwd+".group")
	sshGuest := func(command string) (string, error) {
		args := append([]string{"netns", "exec", g.netns, "ssh"}, agenttest.OpenSSHOptions(knownHosts, identity)...)
		out, err := exec.Command("ip", append(args, "-p", fmt.Sprint(port), "root@127.0.0.1", command)...).CombinedOutput()
		return string(out), err
	}

	c := dialUnix(t, g.sock)
	if r, err := c.Provision(ctxT(t), proto.ProvisionArgs{}); err != nil || r.Listen != "" {
		t.Fatalf("before provisioning: got %+v, %v; want SSH not listening", r, err)
	}
	r, err := c.Provision(ctxT(t), proto.ProvisionArgs{HostKey: string(host.PrivatePEM), AuthorizedKeys: &[]string{user.AuthorizedLine}})
	if err != nil || r.Listen != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("Provision: got %+v, %v; want SSH listening on port %d", r, err, port)
	}
	if out, err := sshGuest("hostname"); err != nil || out != "nsguest\n" {
		t.Fatalf("ssh into the guest: got %q, %v; want its hostname", out, err)
	}

	// init restarts a dead service; the new one reads the provisioned key
	_, _ = c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"sh", "-c", "kill -9 $PPID; sleep 5"}})
	c.Close()
	c2 := dialUnix(t, g.sock)
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := c2.Provision(ctxT(t), proto.ProvisionArgs{})
		if err != nil {
			t.Fatalf("state after the service restarted: %v", err)
		}
		if r.Listen != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted service is not listening for SSH 15s later: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := sshGuest("echo after-restart"); err != nil || out != "after-restart\n" {
		t.Errorf("ssh after the service restarted: got %q, %v", out, err)
	}
	if err := c2.Shutdown(ctxT(t), proto.ActionPoweroff); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
}
