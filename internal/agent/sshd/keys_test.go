package sshd_test

import (
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/sshd"
)

func TestKeyStore(t *testing.T) {
	a, err := agenttest.NewKey("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := agenttest.NewKey("b")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys", "authorized_keys")
	ks, err := sshd.NewKeyStore(path)
	if err != nil {
		t.Fatalf("NewKeyStore (no file yet): %v", err)
	}
	if ks.Authorized(a.Signer.PublicKey()) {
		t.Fatal("empty store authorizes a key")
	}
	n, err := ks.SetAuthorizedKeys([]string{"# comment", "", a.AuthorizedLine, a.AuthorizedLine})
	if err != nil || n != 1 {
		t.Fatalf("SetAuthorizedKeys: got %d, %v; want 1 distinct key", n, err)
	}
	if _, err := ks.SetAuthorizedKeys([]string{b.AuthorizedLine, "ssh-ed25519 not-base64!"}); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: got %v, want an error naming line 2", err)
	}
	if !ks.Authorized(a.Signer.PublicKey()) || ks.Authorized(b.Signer.PublicKey()) {
		t.Error("a refused update changed the set")
	}
	reloaded, err := sshd.NewKeyStore(path)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !reloaded.Authorized(a.Signer.PublicKey()) || reloaded.Authorized(b.Signer.PublicKey()) {
		t.Error("reloaded store differs from the saved set")
	}
}
