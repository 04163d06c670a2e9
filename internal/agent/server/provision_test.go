package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/proto"
	"banger/internal/agent/server"
	"banger/internal/agent/sshd"

	"golang.org/x/crypto/ssh"
)

// startSSH runs a real SSH service, with nothing provisioned, whose host key is
// persisted at hostKeyPath.
func startSSH(t *testing.T, hostKeyPath string) *sshd.Service {
	t.Helper()
	dir := t.TempDir()
	keys, err := sshd.NewKeyStore(filepath.Join(dir, "authorized_keys"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sshd.New(sshd.Config{Logger: testLogger(t), HostKeys: sshd.NewHostKeyStore(hostKeyPath), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	svc := sshd.NewService(srv, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ssh Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ssh Run did not return")
		}
	})
	return svc
}

func TestProvisionCall(t *testing.T) {
	host, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	user, err := agenttest.NewKey("user")
	if err != nil {
		t.Fatal(err)
	}
	hostKeyPath := filepath.Join(t.TempDir(), "ssh_host_ed25519_key")
	svc := startSSH(t, hostKeyPath)
	c := newAgent(t, server.Config{SSH: svc})

	refused := []struct {
		name string
		call func() error
	}{
		{"garbage host key", func() error { return c.SetHostKey(ctxT(t), []byte("garbage")) }},
		{"public key as host key", func() error { return c.SetHostKey(ctxT(t), []byte(host.AuthorizedLine)) }},
		{"bad authorized key", func() error {
			_, err := c.Provision(ctxT(t), proto.ProvisionArgs{HostKey: string(host.PrivatePEM), AuthorizedKeys: &[]string{"nope"}})
			return err
		}},
		{"unknown field", func() error {
			return c.RawCall(ctxT(t), proto.CallProvision, json.RawMessage(`{"host_key_pem": "x"}`))
		}},
	}
	for _, tt := range refused {
		if err := tt.call(); !errors.Is(err, proto.ErrBadRequest) {
			t.Errorf("%s: got %v, want bad request", tt.name, err)
		}
	}
	if r, err := c.Provision(ctxT(t), proto.ProvisionArgs{}); err != nil || r != (proto.ProvisionResult{}) {
		t.Errorf("after refusals: got %+v, %v; want nothing provisioned", r, err)
	}
	if err := c.SetHostKey(ctxT(t), nil); err == nil {
		t.Error("SetHostKey(nil): got success")
	}

	if n, err := c.SetAuthorizedKeys(ctxT(t), []string{user.AuthorizedLine}); err != nil || n != 1 {
		t.Fatalf("SetAuthorizedKeys through the SSH service: got %d, %v; want 1", n, err)
	}
	if err := c.SetHostKey(ctxT(t), host.PrivatePEM); err != nil {
		t.Fatalf("SetHostKey: %v", err)
	}
	r, err := c.Provision(ctxT(t), proto.ProvisionArgs{})
	if err != nil {
		t.Fatal(err)
	}
	if want := ssh.FingerprintSHA256(host.Signer.PublicKey()); r.HostKey != want || r.AuthorizedKeys != 1 || r.Listen == "" {
		t.Errorf("state: got %+v, want host key %s, 1 key, listening", r, want)
	}
	if b, err := os.ReadFile(hostKeyPath); err != nil || string(b) != string(host.PrivatePEM) {
		t.Errorf("persisted host key: got %q, %v", b, err)
	}
}

// TestProvisionPersistFailure: a key that cannot be written is an internal error
// (not the host's fault), with the reason.
func TestProvisionPersistFailure(t *testing.T) {
	host, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newAgent(t, server.Config{SSH: startSSH(t, filepath.Join(notDir, "key"))})
	err = c.SetHostKey(ctxT(t), host.PrivatePEM)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeInternal || !strings.Contains(pe.Message, "persist ssh host key") {
		t.Errorf("SetHostKey with an unwritable path: got %v, want an internal error saying the key could not be persisted", err)
	}
	if r, err := c.Provision(ctxT(t), proto.ProvisionArgs{}); err != nil || r.HostKey != "" || r.Listen != "" {
		t.Errorf("after the failure: got %+v, %v; want no host key, not listening", r, err)
	}
}

func TestProvisionWithoutSSH(t *testing.T) {
	c := newAgent(t, server.Config{})
	host, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetHostKey(ctxT(t), host.PrivatePEM); !errors.Is(err, proto.ErrUnsupported) {
		t.Errorf("SetHostKey without SSH: got %v, want unsupported", err)
	}
}
