package agenttest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Key is a fresh ed25519 key pair as OpenSSH would store it.
type Key struct {
	Signer ssh.Signer
	// PrivatePEM is the private key in OpenSSH format (what ssh-keygen writes).
	PrivatePEM []byte
	// AuthorizedLine is the public key as one authorized_keys line.
	AuthorizedLine string
}

// NewKey generates an ed25519 key.
func NewKey(comment string) (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return Key{}, fmt.Errorf("marshal private key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return Key{}, fmt.Errorf("signer: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) + " " + comment
	return Key{Signer: s, PrivatePEM: pem.EncodeToMemory(blk), AuthorizedLine: line}, nil
}

// WritePrivate writes the private key where ssh -i can use it (mode 0600, which
// OpenSSH insists on).
func (k Key) WritePrivate(path string) error {
	return os.WriteFile(path, k.PrivatePEM, 0o600)
}

// KnownHostsLine is the known_hosts entry for a host key served on host:port, in
// the form OpenSSH looks up for a non-default port: "[host]:port type base64".
func KnownHostsLine(host string, port int, pub ssh.PublicKey) string {
	h := host
	if port != 22 {
		h = "[" + host + "]:" + strconv.Itoa(port)
	}
	return h + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// OpenSSHOptions are the client options that make OpenSSH trust exactly the given
// known_hosts file and key, never ask, and ignore the user's own configuration.
func OpenSSHOptions(knownHosts, identity string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentityFile=" + identity,
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=20",
		"-o", "LogLevel=ERROR",
	}
}
