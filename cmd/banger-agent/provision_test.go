package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/proto"

	"golang.org/x/crypto/ssh"
)

// TestServiceProvisionedSSH is the VM's first boot as bangerd sees it: the agent
// starts with no host key (SSH not listening), the host provisions the key whose
// public half it put in known_hosts plus the user's key, and the real OpenSSH
// client logs in with strict host key checking. A second key then serves new
// connections while a session opened under the first keeps going.
func TestServiceProvisionedSSH(t *testing.T) {
	requireRootAndSSH(t)
	f := newSSHFixture(t)
	if err := os.Remove(f.hostKey); err != nil {
		t.Fatal(err)
	}
	sock := f.dir + "/agent.sock"
	startAgent(t, append([]string{"service", "-control-unix", sock, "-control-serial", "", "-control-vsock", "0"}, f.args()...)...)
	c := dialUnix(t, sock)
	addr := fmt.Sprintf("127.0.0.1:%d", f.port)

	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatal("SSH listens before the host provisioned a host key")
	}
	r, err := c.Provision(ctxT(t), proto.ProvisionArgs{HostKey: string(f.host.PrivatePEM), AuthorizedKeys: &[]string{f.user.AuthorizedLine}})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if want := (proto.ProvisionResult{HostKey: ssh.FingerprintSHA256(f.host.Signer.PublicKey()), AuthorizedKeys: 1, Listen: addr}); r != want {
		t.Errorf("Provision: got %+v, want %+v", r, want)
	}
	if out, code := f.ssh(t, "echo first-login"); code != 0 || out != "first-login\n" {
		t.Fatalf("ssh with the provisioned key: got exit %d %q", code, out)
	}

	// a session under the first key, waiting for a line
	long := exec.Command("ssh", append(agenttest.OpenSSHOptions(f.knownHosts, f.identity), "-p", fmt.Sprint(f.port), "root@127.0.0.1", `echo ready; read line; echo "got $line"`)...)
	stdin, err := long.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := long.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = long.Process.Kill(); _ = long.Wait() })
	lines := bufio.NewReader(stdout)
	if l, err := lines.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("long session: got %q, %v; want ready", l, err)
	}

	second, err := agenttest.NewKey("host-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetHostKey(ctxT(t), second.PrivatePEM); err != nil {
		t.Fatalf("SetHostKey(second key): %v", err)
	}
	if out, code := f.ssh(t, "true"); code != 255 || !strings.Contains(out, "HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("ssh trusting the first key after the change: got exit %d %q, want the client to refuse", code, out)
	}
	f.trust(t, second.Signer.PublicKey())
	if out, code := f.ssh(t, "echo second-login"); code != 0 || out != "second-login\n" {
		t.Errorf("ssh trusting the second key: got exit %d %q", code, out)
	}
	if b, err := os.ReadFile(f.hostKey); err != nil || string(b) != string(second.PrivatePEM) {
		t.Errorf("host key file: got %q, %v; want the second key", b, err)
	}
	if st, err := os.Stat(f.hostKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("host key file mode: got %v, %v; want 0600", st.Mode(), err)
	}

	if _, err := io.WriteString(stdin, "hello\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	rest, _ := io.ReadAll(lines)
	if err := long.Wait(); err != nil || string(rest) != "got hello\n" {
		t.Errorf("the session opened under the first key: got %q, %v; want it to finish normally", rest, err)
	}

	if err := c.SetHostKey(ctxT(t), []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nbogus\n-----END OPENSSH PRIVATE KEY-----\n")); !errors.Is(err, proto.ErrBadRequest) {
		t.Errorf("SetHostKey(garbage): got %v, want bad_request", err)
	}
	if out, code := f.ssh(t, "echo still-second"); code != 0 || out != "still-second\n" {
		t.Errorf("after a refused key: got exit %d %q, want the second key still served", code, out)
	}
}
