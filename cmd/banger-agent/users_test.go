package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/agent/agenttest"
)

// TestSSHAsUnprivilegedUser logs in as a non-root guest user: commands run with
// that user's ids, and sftp runs through the agent's sftp-server helper as that
// user, so the kernel refuses what the user may not write.
func TestSSHAsUnprivilegedUser(t *testing.T) {
	requireRootAndSSH(t)
	f := newSSHFixture(t)
	// the user must be able to reach its home inside the test's directories
	for _, d := range []string{filepath.Dir(f.dir), f.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(f.dir, "builder")
	rootOnly := filepath.Join(f.dir, "root-only")
	for _, d := range []string{home, rootOnly} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(home, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:%s:/bin/sh\nbuilder:x:4242:4242::%s:/bin/sh\n", f.home, home)
	if err := os.WriteFile(f.passwd, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(f.dir, "agent.sock")
	startAgent(t, append([]string{"service", "-control-unix", sock, "-control-serial", "", "-control-vsock", "0"}, f.args()...)...)
	c := dialUnix(t, sock)
	if _, err := c.SetAuthorizedKeys(ctxT(t), []string{f.user.AuthorizedLine}); err != nil {
		t.Fatal(err)
	}

	if out, code := f.sshAs(t, "builder", "id -u; id -g; echo $HOME; pwd"); code != 0 || out != fmt.Sprintf("4242\n4242\n%s\n%s\n", home, home) {
		t.Errorf("ssh as builder: got exit %d %q", code, out)
	}

	local := filepath.Join(f.dir, "payload")
	if err := os.WriteFile(local, []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	batch := filepath.Join(f.dir, "batch")
	if err := os.WriteFile(batch, []byte("put "+local+" uploaded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := f.sftp(t, "builder", batch); code != 0 {
		t.Fatalf("sftp put as builder: exit %d: %s", code, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(home, "uploaded"), &st); err != nil || st.Uid != 4242 {
		t.Errorf("uploaded file: owner %d (%v), want 4242", st.Uid, err)
	}
	if err := os.WriteFile(batch, []byte("put "+local+" "+rootOnly+"/intruder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := f.sftp(t, "builder", batch); code == 0 || !strings.Contains(strings.ToLower(out), "permission denied") {
		t.Errorf("sftp put into a root-only directory: got exit %d %q, want permission denied", code, out)
	}
	if _, err := os.Stat(filepath.Join(rootOnly, "intruder")); err == nil {
		t.Error("builder wrote into a root-only directory")
	}
}

func (f *sshFixture) sftp(t *testing.T, user, batch string) (string, int) {
	t.Helper()
	args := append(agenttest.OpenSSHOptions(f.knownHosts, f.identity), "-P", fmt.Sprint(f.port), "-b", batch, user+"@127.0.0.1")
	out, err := exec.Command("sftp", args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sftp: %v", err)
	}
	return string(out), 0
}

// TestServiceWithoutHostKey: SSH cannot start without its host key, but the
// control API, the host's lifeline, must still come up.
func TestServiceWithoutHostKey(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	startAgent(t, "service", "-control-unix", sock, "-control-serial", "", "-control-vsock", "0",
		"-ssh-listen", "127.0.0.1:0", "-ssh-host-key", filepath.Join(dir, "missing"), "-authorized-keys", filepath.Join(dir, "ak"))
	c := dialUnix(t, sock)
	if _, err := c.Health(ctxT(t)); err != nil {
		t.Fatalf("health without SSH: %v", err)
	}
}
