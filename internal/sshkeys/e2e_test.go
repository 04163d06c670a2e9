package sshkeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sshd is a real OpenSSH server on 127.0.0.1. The test owns the listening socket and
// starts `sshd -i` for each connection (inetd mode), so the port is never raced for.
// Each sshd runs in a private mount namespace with a tmpfs /run holding the /run/sshd
// directory it insists on, so nothing on the host is created or changed.
type sshd struct {
	addr string
	port int

	mu  sync.Mutex   // guards log
	log bytes.Buffer // every sshd's stderr, for failure messages
}

func (s *sshd) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

func (s *sshd) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

func startSSHD(t *testing.T, hostKeyPEM []byte, authorizedLine string) *sshd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a real sshd that logs in as root")
	}
	requireTools(t, "/usr/sbin/sshd", "unshare", "mount", "ssh")
	dir := t.TempDir()
	files := map[string]string{
		"host_key":        string(hostKeyPEM),
		"authorized_keys": authorizedLine + "\n",
		"sshd_config": strings.Join([]string{
			"HostKey " + filepath.Join(dir, "host_key"),
			"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
			"StrictModes no",
			"UsePAM no",
			"PermitRootLogin prohibit-password",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PidFile none",
			"LogLevel VERBOSE",
		}, "\n") + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshd{addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		if t.Failed() {
			t.Logf("sshd logs:\n%s", s.logs())
		}
	})
	script := `mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -i -e -f "$1"`
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f, err := c.(*net.TCPConn).File()
			c.Close()
			if err != nil {
				fmt.Fprintln(s, "test: dup socket:", err)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", filepath.Join(dir, "sshd_config"))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, s
			err = cmd.Start()
			f.Close() // sshd holds its own copy
			if err != nil {
				cancel()
				fmt.Fprintln(s, "test: start sshd:", err)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer cancel()
				cmd.Wait()
			}()
		}
	}()
	return s
}

// e2eSetup is a user key, a host key, an sshd serving them, banger's known_hosts and
// ssh_config, all under one temporary directory.
type e2eSetup struct {
	sshd  *sshd
	root  string
	user  UserKey
	host  string // host public key line
	known *KnownHosts
	cfg   string // ssh_config path
}

func newE2E(t *testing.T) *e2eSetup {
	t.Helper()
	dir := t.TempDir()
	user, err := EnsureUserKey(DefaultUserKeyPath(filepath.Join(dir, "home")))
	if err != nil {
		t.Fatal(err)
	}
	priv, pub, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &e2eSetup{sshd: startSSHD(t, priv, user.AuthorizedLine), root: filepath.Join(dir, "root"), user: user, host: pub}
	e.known, err = NewKnownHosts(filepath.Join(e.root, "state", "ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = filepath.Join(e.root, "state", "ssh", "ssh_config")
	// The test binary stands in for banger: TestMain turns it into `vm ssh-proxy`.
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	err = WriteConfig(e.cfg, ConfigOptions{Domain: "vm", UserKey: user.PrivatePath, KnownHosts: e.known.Path(), Banger: bin, Root: e.root})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// ssh runs the real ssh with no terminal, no agent and no password prompt: anything
// that would need a human (an unknown host key included) fails instead.
func (e *e2eSetup) ssh(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"-F", e.cfg, "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "GlobalKnownHostsFile=/dev/null"}, args...)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	cmd.Env = append(append(os.Environ(), "SSH_AUTH_SOCK="), env...)
	cmd.Stdin = nil
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ssh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func TestEndToEndDirectWithStrictHostKeyChecking(t *testing.T) {
	e := newE2E(t)
	port := strconv.Itoa(e.sshd.port)
	// Known under a VM name and under the address ssh actually looks up for a direct
	// connection to a non-default port.
	if err := e.known.Set([]string{"direct.vm", "[127.0.0.1]:" + port}, e.host); err != nil {
		t.Fatal(err)
	}
	out, err := e.ssh(t, nil, "-o", "HostName=127.0.0.1", "-p", port, "direct.vm", "echo ok; id -un")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out, "ok\nroot\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	// With another key on record, strict checking must refuse: the success above was
	// the known_hosts line at work, not a lax client.
	if err := e.known.Set([]string{"[127.0.0.1]:" + port}, hostKey(t)); err != nil {
		t.Fatal(err)
	}
	_, err = e.ssh(t, nil, "-o", "HostName=127.0.0.1", "-p", port, "direct.vm", "echo ok")
	if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("with a wrong key on record: got %v, want a host key verification failure", err)
	}
	// And with none, it must not prompt or add it.
	if err := e.known.Remove([]string{"[127.0.0.1]:" + port}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ssh(t, nil, "-o", "HostName=127.0.0.1", "-p", port, "direct.vm", "echo ok")
	if err == nil || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("with no key on record: got %v, want a host key verification failure", err)
	}
}

// TestEndToEndThroughProxy is plain `ssh NAME.vm` where NAME.vm does not resolve: the
// generated config sends ssh through the ProxyCommand (this test binary acting as
// `banger --root R vm ssh-proxy %h %p`, which pipes with Proxy), and the host key is
// checked under the VM name.
func TestEndToEndThroughProxy(t *testing.T) {
	requireTools(t, "getent")
	e := newE2E(t)
	const name = "banger-sshkeys-e2e.vm"
	if _, err := exec.Command("getent", "ahosts", name).Output(); err == nil {
		t.Skipf("%s resolves on this machine; the test needs a name that does not", name)
	}
	if err := e.known.Set([]string{name}, e.host); err != nil {
		t.Fatal(err)
	}
	env := []string{envProxyAddr + "=" + e.sshd.addr, envProxyRoot + "=" + e.root, envProxyHost + "=" + name}
	out, err := e.ssh(t, env, name, "echo ok")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out, "ok\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	t.Run("ProxyCommand on the command line", func(t *testing.T) {
		bin, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		env := []string{envProxyAddr + "=" + e.sshd.addr, envProxyHost + "=" + name}
		out, err := e.ssh(t, env, "-o", "ProxyCommand="+bin+" %h %p", name, "echo ok")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := out, "ok\n"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("unknown VM name", func(t *testing.T) {
		const other = "banger-sshkeys-unknown.vm"
		env := []string{envProxyAddr + "=" + e.sshd.addr, envProxyRoot + "=" + e.root, envProxyHost + "=" + other}
		_, err := e.ssh(t, env, other, "echo ok")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(err.Error(), "Host key verification failed") {
			t.Errorf("got %v, want a host key verification failure", err)
		}
	})
}
