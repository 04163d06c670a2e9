package sshd_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/sshd"

	"golang.org/x/crypto/ssh"
)

func pemBlock(t *testing.T, typ string, der []byte, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParseHostKey(t *testing.T) {
	ed, err := agenttest.NewKey("host")
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, ecErr := x509.MarshalECPrivateKey(ec)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024) // small: only parsing is tested, and 2048 takes seconds under -race
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, p8Err := x509.MarshalPKCS8PrivateKey(edPriv)
	encrypted, err := ssh.MarshalPrivateKeyWithPassphrase(edPriv, "host", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	good := []struct {
		name    string
		pem     []byte
		keyType string
	}{
		{"ed25519 in OpenSSH format", ed.PrivatePEM, ssh.KeyAlgoED25519},
		{"ed25519 in PKCS#8", pemBlock(t, "PRIVATE KEY", pkcs8, p8Err), ssh.KeyAlgoED25519},
		{"ECDSA P-256 in SEC 1", pemBlock(t, "EC PRIVATE KEY", ecDER, ecErr), ssh.KeyAlgoECDSA256},
		{"RSA in PKCS#1", pemBlock(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), nil), ssh.KeyAlgoRSA},
		{"surrounded by blank lines", append(append([]byte("\n\n"), ed.PrivatePEM...), "\n\n"...), ssh.KeyAlgoED25519},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sshd.ParseHostKey(tt.pem)
			if err != nil {
				t.Fatalf("got %v, want the key accepted", err)
			}
			if got := s.PublicKey().Type(); got != tt.keyType {
				t.Errorf("key type: got %s, want %s", got, tt.keyType)
			}
		})
	}
	bad := []struct {
		name, pem, mention string
	}{
		{"empty", "", "empty"},
		{"blank", " \n\t\n", "empty"},
		{"garbage", "not a key at all", "private key"},
		{"a public key", ed.AuthorizedLine, "private key"},
		{"truncated", string(ed.PrivatePEM[:len(ed.PrivatePEM)/2]), "private key"},
		{"encrypted", string(pem.EncodeToMemory(encrypted)), "encrypted"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := sshd.ParseHostKey([]byte(tt.pem)); err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.mention)
			}
		})
	}
}

func TestHostKeyStore(t *testing.T) {
	a, err := agenttest.NewKey("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := agenttest.NewKey("b")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "banger")
	path := filepath.Join(dir, "ssh_host_ed25519_key")
	hk := sshd.NewHostKeyStore(path)
	if err := hk.Load(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load with no file: got %v, want os.ErrNotExist", err)
	}
	if hk.Signer() != nil {
		t.Error("empty store has a signer")
	}
	if _, err := hk.Set([]byte("garbage")); err == nil {
		t.Error("Set(garbage): got success")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused key was written: stat got %v", err)
	}

	if _, err := hk.Set(a.PrivatePEM); err != nil {
		t.Fatalf("Set(a): %v", err)
	}
	samePublic(t, "after Set(a)", hk.Signer(), a.Signer)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode: got %o, want 600", mode)
	}
	if got, _ := os.ReadFile(path); string(got) != string(a.PrivatePEM) {
		t.Errorf("key file: got %q, want the PEM as given", got)
	}
	if _, err := hk.Set([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")); err == nil {
		t.Error("Set(broken key): got success")
	}
	samePublic(t, "after a refused Set", hk.Signer(), a.Signer)

	reloaded := sshd.NewHostKeyStore(path)
	if err := reloaded.Load(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	samePublic(t, "reloaded", reloaded.Signer(), a.Signer)

	if _, err := hk.Set(b.PrivatePEM); err != nil {
		t.Fatalf("Set(b): %v", err)
	}
	samePublic(t, "after Set(b)", hk.Signer(), b.Signer)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("key directory holds %q, want only the key (no temporary files left)", names)
	}

	if err := os.WriteFile(path, []byte("corrupt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sshd.NewHostKeyStore(path).Load(); err == nil || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(corrupt file): got %v, want an error naming %s", err, path)
	}
}

func samePublic(t *testing.T, what string, got, want ssh.Signer) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no host key, want %s", what, ssh.FingerprintSHA256(want.PublicKey()))
	}
	if g, w := ssh.FingerprintSHA256(got.PublicKey()), ssh.FingerprintSHA256(want.PublicKey()); g != w {
		t.Errorf("%s: host key %s, want %s", what, g, w)
	}
}
