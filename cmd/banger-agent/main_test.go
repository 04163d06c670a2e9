package main

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/client"

	"golang.org/x/crypto/ssh"
)

// agentBin is the banger-agent binary the tests run, built once by TestMain the
// way it ships: static, CGO_ENABLED=0.
var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "banger-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// other users run the binary too (the sftp helper as the login user)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "banger-agent")
	build := exec.Command("go", "build", "-trimpath", "-o", agentBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build banger-agent: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logWriter forwards a process's output to the test log, line by line.
type logWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    bytes.Buffer
	done   bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			break
		}
		w.t.Log(w.prefix + strings.TrimRight(line, "\n"))
	}
	return len(p), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// agentProc is a running agent binary.
type agentProc struct {
	cmd  *exec.Cmd
	done chan error
}

// startAgent runs the binary with args; the test's end stops it with SIGTERM (and
// fails the test if it does not exit cleanly and promptly).
func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(agentBin, args...)
	lw := &logWriter{t: t, prefix: "agent: "}
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	p := &agentProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		defer lw.stop()
		if cmd.ProcessState != nil {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("agent exit after SIGTERM: %v, want a clean exit", err)
			}
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			t.Errorf("agent did not exit within 10s of SIGTERM")
		}
	})
	return p
}

// dialUnix connects to the agent's control socket, waiting for it to appear. A
// failed handshake is retried too: right after an agent restart the socket file
// may still belong to the dead process.
func dialUnix(t *testing.T, sock string) *client.Client {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := dialOnce(sock)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent at %s never answered: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: it is dynamically linked; build with CGO_ENABLED=0")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v; build with CGO_ENABLED=0", libs)
	}
}

func TestVersionMode(t *testing.T) {
	out, err := exec.Command(agentBin, "version").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Errorf("version: got %q, %v", out, err)
	}
	if err := exec.Command(agentBin, "init").Run(); err == nil {
		t.Error("init mode outside PID 1: got success, want a refusal")
	}
	if err := exec.Command(agentBin, "bogus-mode").Run(); err == nil {
		t.Error("unknown mode: got success, want an error")
	}
}

// sshFixture is the SSH material the host would provision.
type sshFixture struct {
	dir, hostKey, identity, knownHosts, passwd, home string
	user, host                                       agenttest.Key
	port                                             int
}

func newSSHFixture(t *testing.T) *sshFixture {
	t.Helper()
	dir := t.TempDir()
	f := &sshFixture{dir: dir, hostKey: filepath.Join(dir, "host_key"), identity: filepath.Join(dir, "id"),
		knownHosts: filepath.Join(dir, "known_hosts"), passwd: filepath.Join(dir, "passwd"), home: filepath.Join(dir, "home")}
	var err error
	if f.host, err = agenttest.NewKey("host"); err != nil {
		t.Fatal(err)
	}
	if f.user, err = agenttest.NewKey("user"); err != nil {
		t.Fatal(err)
	}
	if err := f.host.WritePrivate(f.hostKey); err != nil {
		t.Fatal(err)
	}
	if err := f.user.WritePrivate(f.identity); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.passwd, []byte("root:x:0:0:root:"+f.home+":/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	f.trust(t, f.host.Signer.PublicKey())
	return f
}

// trust makes pub the one host key the ssh client accepts for the agent.
func (f *sshFixture) trust(t *testing.T, pub ssh.PublicKey) {
	t.Helper()
	if err := os.WriteFile(f.knownHosts, []byte(agenttest.KnownHostsLine("127.0.0.1", f.port, pub)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sshAs runs the real OpenSSH client as a given login user.
func (f *sshFixture) sshAs(t *testing.T, user, command string) (string, int) {
	t.Helper()
	args := append(agenttest.OpenSSHOptions(f.knownHosts, f.identity), "-p", fmt.Sprint(f.port), user+"@127.0.0.1", command)
	out, err := exec.Command("ssh", args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	return string(out), code
}

func (f *sshFixture) args() []string {
	return []string{"-ssh-listen", fmt.Sprintf("127.0.0.1:%d", f.port), "-ssh-host-key", f.hostKey,
		"-authorized-keys", filepath.Join(f.dir, "authorized_keys"), "-passwd", f.passwd, "-group", f.passwd + ".group"}
}

// ssh runs the real OpenSSH client against the agent.
func (f *sshFixture) ssh(t *testing.T, command string) (string, int) {
	t.Helper()
	args := append(agenttest.OpenSSHOptions(f.knownHosts, f.identity), "-p", fmt.Sprint(f.port), "root@127.0.0.1", command)
	out, err := exec.Command("ssh", args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	return string(out), code
}
