package sshd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/sshd"
	"banger/internal/agent/users"

	"golang.org/x/crypto/ssh"
)

// env is an SSH server in process plus what the real OpenSSH client needs to reach
// it: a known_hosts file holding exactly the provisioned host key, and a key.
type env struct {
	port       int
	home       string
	dir        string
	knownHosts string
	identity   string
	keys       *sshd.KeyStore
	hostKeys   *sshd.HostKeyStore
}

func requireOpenSSH(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ssh", "scp", "sftp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs the OpenSSH client (%s): apt-get install openssh-client", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("logs in as root from a test passwd file; run as root (CI does)")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireOpenSSH(t)
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:"+home+":/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostKey, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	hostKeyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := hostKey.WritePrivate(hostKeyPath); err != nil {
		t.Fatal(err)
	}
	hostKeys := sshd.NewHostKeyStore(hostKeyPath)
	if err := hostKeys.Load(); err != nil {
		t.Fatalf("load host key: %v", err)
	}
	signer := hostKeys.Signer()
	user, err := agenttest.NewKey("user@test")
	if err != nil {
		t.Fatal(err)
	}
	identity := filepath.Join(dir, "id_ed25519")
	if err := user.WritePrivate(identity); err != nil {
		t.Fatal(err)
	}
	keys, err := sshd.NewKeyStore(filepath.Join(dir, "authorized_keys"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.SetAuthorizedKeys([]string{user.AuthorizedLine}); err != nil {
		t.Fatalf("SetAuthorizedKeys: %v", err)
	}
	srv, err := sshd.New(sshd.Config{
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		HostKeys: hostKeys,
		Keys:     keys,
		Users:    users.DB{PasswdPath: passwd, GroupPath: filepath.Join(dir, "group")},
		Version:  "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(agenttest.KnownHostsLine("127.0.0.1", port, signer.PublicKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &env{port: port, home: home, dir: dir, knownHosts: knownHosts, identity: identity, keys: keys, hostKeys: hostKeys}
}

// run runs an OpenSSH tool against the server and returns stdout, stderr and the
// exit code.
func (e *env) run(t *testing.T, tool string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := agenttest.OpenSSHOptions(e.knownHosts, e.identity)
	if tool == "ssh" {
		full = append(full, "-p", strconv.Itoa(e.port))
	} else {
		full = append(full, "-P", strconv.Itoa(e.port))
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, tool, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out.String(), errb.String(), code
}

func (e *env) ssh(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return e.run(t, "ssh", append([]string{"root@127.0.0.1"}, args...)...)
}

func TestSSHExec(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name            string
		args            []string
		wantOut, wantEr string
		wantCode        int
	}{
		{"output and exit code", []string{"echo hello; echo oops >&2; exit 42"}, "hello\n", "oops\n", 42},
		{"login environment", []string{`echo "$USER $HOME $SHELL"; pwd`}, "root " + e.home + " /bin/sh\n" + e.home + "\n", "", 0},
		{"env request", []string{"-o", "SetEnv=BANGER_TEST=yes", `echo "$BANGER_TEST"`}, "yes\n", "", 0},
		{"killed by signal", []string{"kill -TERM $$"}, "", "", 255},
		{"pty", []string{"-tt", "tty | cut -c1-9; test -t 1 && echo on-a-tty"}, "/dev/pts/\r\non-a-tty\r\n", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := e.ssh(t, tt.args...)
			if out != tt.wantOut || code != tt.wantCode || (tt.wantEr != "" && errOut != tt.wantEr) {
				t.Errorf("got stdout %q stderr %q exit %d; want %q %q %d", out, errOut, code, tt.wantOut, tt.wantEr, tt.wantCode)
			}
		})
	}
	out, _, code := e.ssh(t, "cat")
	if code != 0 || out != "" {
		t.Errorf("cat with empty stdin: got %q exit %d, want empty, 0", out, code)
	}
}

func TestSSHStdin(t *testing.T) {
	e := newEnv(t)
	cmd := exec.Command("ssh", append(agenttest.OpenSSHOptions(e.knownHosts, e.identity), "-p", strconv.Itoa(e.port), "root@127.0.0.1", "tr a-z A-Z")...)
	cmd.Stdin = strings.NewReader("shout\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "SHOUT\n" {
		t.Errorf("stdin through ssh: got %q, %v; want SHOUT", out, err)
	}
}

func TestSSHRefusals(t *testing.T) {
	e := newEnv(t)
	other, err := agenttest.NewKey("intruder")
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := filepath.Join(e.dir, "id_wrong")
	if err := other.WritePrivate(wrongKey); err != nil {
		t.Fatal(err)
	}
	good := e.identity
	e.identity = wrongKey
	_, errOut, code := e.ssh(t, "true")
	if code != 255 || !strings.Contains(errOut, "Permission denied (publickey)") {
		t.Errorf("wrong key: got exit %d stderr %q, want 255 and permission denied (publickey)", code, errOut)
	}
	e.identity = good
	_, errOut, code = e.run(t, "ssh", "nosuchuser@127.0.0.1", "true")
	if code != 255 || !strings.Contains(errOut, "Permission denied") {
		t.Errorf("unknown user: got exit %d stderr %q, want refused", code, errOut)
	}
	// a host key other than the provisioned one must make the client refuse
	e.trust(t, other.Signer.PublicKey())
	_, errOut, code = e.ssh(t, "true")
	if code != 255 || !strings.Contains(errOut, "HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("mismatched known_hosts: got exit %d stderr %q, want the client to refuse", code, errOut)
	}
	// the server is still serving
	e.trust(t, e.hostKeys.Signer().PublicKey())
	if out, _, code := e.ssh(t, "echo still-here"); code != 0 || out != "still-here\n" {
		t.Errorf("after refusals: got %q exit %d", out, code)
	}
}

// trust makes pub the one host key the client accepts.
func (e *env) trust(t *testing.T, pub ssh.PublicKey) {
	t.Helper()
	if err := os.WriteFile(e.knownHosts, []byte(agenttest.KnownHostsLine("127.0.0.1", e.port, pub)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeRandom(t *testing.T, path string, size int) [32]byte {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

func sumFile(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func TestSCPRoundTrip(t *testing.T) {
	e := newEnv(t)
	local := filepath.Join(e.dir, "big.bin")
	want := writeRandom(t, local, 50<<20)
	for _, mode := range []struct {
		name  string
		flags []string
	}{
		{"sftp protocol", nil},
		{"legacy scp protocol", []string{"-O"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			remote := filepath.Join(e.dir, "remote-"+strings.ReplaceAll(mode.name, " ", "-")+".bin")
			back := remote + ".back"
			if _, errOut, code := e.run(t, "scp", append(mode.flags, local, "root@127.0.0.1:"+remote)...); code != 0 {
				t.Fatalf("scp upload: exit %d: %s", code, errOut)
			}
			if got := sumFile(t, remote); got != want {
				t.Fatalf("uploaded file: sha256 %x, want %x", got, want)
			}
			if _, errOut, code := e.run(t, "scp", append(mode.flags, "root@127.0.0.1:"+remote, back)...); code != 0 {
				t.Fatalf("scp download: exit %d: %s", code, errOut)
			}
			if got := sumFile(t, back); got != want {
				t.Errorf("downloaded file: sha256 %x, want %x", got, want)
			}
		})
	}
}

func TestSFTPBatch(t *testing.T) {
	e := newEnv(t)
	local := filepath.Join(e.dir, "up.txt")
	if err := os.WriteFile(local, []byte("via sftp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	batch := filepath.Join(e.dir, "batch")
	script := fmt.Sprintf("mkdir sub\ncd sub\nput %s\nls\nget up.txt %s.back\nrename up.txt moved.txt\n", local, local)
	if err := os.WriteFile(batch, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := e.run(t, "sftp", "-b", batch, "root@127.0.0.1")
	if code != 0 {
		t.Fatalf("sftp: exit %d: %s %s", code, out, errOut)
	}
	// relative paths start in the user's home, as with OpenSSH's sftp-server
	if b, err := os.ReadFile(filepath.Join(e.home, "sub", "moved.txt")); err != nil || string(b) != "via sftp\n" {
		t.Errorf("uploaded file in home/sub: got %q, %v", b, err)
	}
	if b, err := os.ReadFile(local + ".back"); err != nil || string(b) != "via sftp\n" {
		t.Errorf("downloaded file: got %q, %v", b, err)
	}
}

func TestSSHLocalForward(t *testing.T) {
	e := newEnv(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := io.ReadAll(io.LimitReader(c, 5))
				fmt.Fprintf(c, "echo:%s", line)
			}()
		}
	}()
	lport := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	args := append(agenttest.OpenSSHOptions(e.knownHosts, e.identity), "-p", strconv.Itoa(e.port),
		"-N", "-o", "ExitOnForwardFailure=yes",
		"-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", lport, target.Addr().(*net.TCPAddr).Port), "root@127.0.0.1")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	var got string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(lport)))
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		_, _ = io.WriteString(c, "hello")
		b, _ := io.ReadAll(c)
		c.Close()
		got = string(b)
		break
	}
	if got != "echo:hello" {
		t.Errorf("through ssh -L: got %q, want %q (ssh stderr: %s)", got, "echo:hello", errb.String())
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
