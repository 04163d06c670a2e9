package sshd_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/proto"
	"banger/internal/agent/sshd"
	"banger/internal/agent/users"

	"golang.org/x/crypto/ssh"
)

// serviceEnv is an SSH service with nothing provisioned, as an agent boots.
type serviceEnv struct {
	svc                   *sshd.Service
	hostKeyPath, keysPath string
	passwd                string
	user                  agenttest.Key
}

// startService runs a Service on addr with its key files in dir; it stops when
// the test ends, and the test checks that it stopped cleanly.
func startService(t *testing.T, dir, addr string) *serviceEnv {
	t.Helper()
	e := &serviceEnv{
		hostKeyPath: filepath.Join(dir, "ssh_host_ed25519_key"),
		keysPath:    filepath.Join(dir, "authorized_keys"),
		passwd:      filepath.Join(dir, "passwd"),
	}
	var err error
	if e.user, err = agenttest.NewKey("user"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.passwd, []byte("dev:x:1000:1000::/home/dev:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := sshd.NewKeyStore(e.keysPath)
	if err != nil {
		t.Fatal(err)
	}
	hostKeys := sshd.NewHostKeyStore(e.hostKeyPath)
	if err := hostKeys.Load(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	srv, err := sshd.New(sshd.Config{
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		HostKeys: hostKeys, Keys: keys,
		Users: users.DB{PasswdPath: e.passwd, GroupPath: filepath.Join(dir, "group")},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = sshd.NewService(srv, addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
		if a := e.svc.Addr(); a != nil {
			t.Errorf("Addr after Run returned: got %v, want nil", a)
		}
	})
	return e
}

func provision(t *testing.T, svc *sshd.Service, m proto.ProvisionArgs) (proto.ProvisionResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return svc.Provision(ctx, m)
}

// dialSSH completes an SSH handshake and login as dev with the user key,
// accepting only hostKey.
func dialSSH(addr string, user agenttest.Key, hostKey ssh.PublicKey) (*ssh.Client, error) {
	return ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User:            "dev",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(user.Signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         10 * time.Second,
	})
}

func keysOf(lines ...string) *[]string { return &lines }

func TestServiceProvisioning(t *testing.T) {
	e := startService(t, t.TempDir(), "127.0.0.1:0")
	a, err := agenttest.NewKey("host-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := agenttest.NewKey("host-b")
	if err != nil {
		t.Fatal(err)
	}

	r, err := provision(t, e.svc, proto.ProvisionArgs{})
	if err != nil || r != (proto.ProvisionResult{}) {
		t.Fatalf("state before provisioning: got %+v, %v; want no host key, no keys, not listening", r, err)
	}

	// invalid material is refused whole: neither part is applied
	refusals := []struct {
		name string
		m    proto.ProvisionArgs
	}{
		{"bad host key", proto.ProvisionArgs{HostKey: "garbage", AuthorizedKeys: keysOf(e.user.AuthorizedLine)}},
		{"bad authorized keys", proto.ProvisionArgs{HostKey: string(a.PrivatePEM), AuthorizedKeys: keysOf(e.user.AuthorizedLine, "ssh-ed25519 !!")}},
	}
	for _, tt := range refusals {
		if _, err := provision(t, e.svc, tt.m); !errors.Is(err, proto.ErrBadRequest) {
			t.Errorf("%s: got %v, want bad request", tt.name, err)
		}
		r, _ := provision(t, e.svc, proto.ProvisionArgs{})
		if r != (proto.ProvisionResult{}) || e.svc.Addr() != nil {
			t.Errorf("%s: state after the refusal %+v, want nothing applied and not listening", tt.name, r)
		}
		for _, p := range []string{e.hostKeyPath, e.keysPath} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s was written (stat: %v)", tt.name, p, err)
			}
		}
	}

	r, err = provision(t, e.svc, proto.ProvisionArgs{HostKey: string(a.PrivatePEM), AuthorizedKeys: keysOf(e.user.AuthorizedLine)})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	addr := e.svc.Addr()
	if addr == nil {
		t.Fatal("not listening after a host key was provisioned")
	}
	want := proto.ProvisionResult{HostKey: ssh.FingerprintSHA256(a.Signer.PublicKey()), AuthorizedKeys: 1, Listen: addr.String()}
	if r != want {
		t.Errorf("provision result: got %+v, want %+v", r, want)
	}
	first, err := dialSSH(addr.String(), e.user, a.Signer.PublicKey())
	if err != nil {
		t.Fatalf("ssh with host key a: %v", err)
	}
	defer first.Close()

	// a new key: new connections present it, the open one carries on
	if r, err = provision(t, e.svc, proto.ProvisionArgs{HostKey: string(b.PrivatePEM)}); err != nil {
		t.Fatalf("provision a second host key: %v", err)
	}
	if r.HostKey != ssh.FingerprintSHA256(b.Signer.PublicKey()) || r.AuthorizedKeys != 1 || r.Listen != addr.String() {
		t.Errorf("after the second key: got %+v, want key b, the keys kept, the same address %s", r, addr)
	}
	if c, err := dialSSH(addr.String(), e.user, a.Signer.PublicKey()); err == nil {
		c.Close()
		t.Error("a new connection still presents the old host key")
	} else if !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("connection trusting the old key: got %v, want a host key mismatch", err)
	}
	c, err := dialSSH(addr.String(), e.user, b.Signer.PublicKey())
	if err != nil {
		t.Fatalf("ssh with host key b: %v", err)
	}
	c.Close()
	if _, _, err := first.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Errorf("the connection made before the key changed: %v, want it still up", err)
	}
}

// TestServiceStartsWithPersistedKey: an agent restarted in a running guest finds
// the key the host provisioned before and listens at once.
func TestServiceStartsWithPersistedKey(t *testing.T) {
	dir := t.TempDir()
	k, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.WritePrivate(filepath.Join(dir, "ssh_host_ed25519_key")); err != nil {
		t.Fatal(err)
	}
	e := startService(t, dir, "127.0.0.1:0")
	deadline := time.Now().Add(10 * time.Second)
	for e.svc.Addr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("not listening 10s after start with a host key on disk")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := provision(t, e.svc, proto.ProvisionArgs{AuthorizedKeys: keysOf(e.user.AuthorizedLine)}); err != nil {
		t.Fatal(err)
	}
	c, err := dialSSH(e.svc.Addr().String(), e.user, k.Signer.PublicKey())
	if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	c.Close()
}

// TestServiceListenFailure: a port that is taken fails the provision call with
// the reason (the key stays installed), and the next provision listens.
func TestServiceListenFailure(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := taken.Addr().String()
	e := startService(t, t.TempDir(), addr)
	k, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	_, err = provision(t, e.svc, proto.ProvisionArgs{HostKey: string(k.PrivatePEM)})
	if err == nil || errors.Is(err, proto.ErrBadRequest) || !strings.Contains(err.Error(), "ssh listen on "+addr) {
		t.Fatalf("provision with the port taken: got %v, want an error saying ssh cannot listen on %s", err, addr)
	}
	if e.svc.Addr() != nil {
		t.Error("Addr set although listening failed")
	}
	taken.Close()
	r, err := provision(t, e.svc, proto.ProvisionArgs{HostKey: string(k.PrivatePEM)})
	if err != nil || r.Listen != addr {
		t.Fatalf("provision once the port is free: got %+v, %v; want listening on %s", r, err, addr)
	}
}
