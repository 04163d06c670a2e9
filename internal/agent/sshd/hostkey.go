package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/crypto/ssh"
)

// HostKeyStore holds the SSH host key, which the host provisions: it made the key
// and wrote the public half into its known_hosts, so the very first connection is
// checked strictly. The guest never makes a host key of its own.
//
// The key is read from its file at start (an agent restarted inside a running VM
// keeps it) and replaced over the control API, because the host cannot always
// write into a guest's disk before boot (a qcow2 overlay). A replaced key applies
// to new connections; established ones keep theirs.
type HostKeyStore struct {
	path string // where the key is persisted; "" keeps it in memory only

	mu     sync.RWMutex // guards signer
	signer ssh.Signer   // nil until a key is loaded or set
}

// NewHostKeyStore returns an empty store persisted at path; Load reads the file.
func NewHostKeyStore(path string) *HostKeyStore {
	return &HostKeyStore{path: path}
}

// Load reads the key file. A missing file is an error that matches
// os.ErrNotExist: the store stays empty until the host sets a key.
func (h *HostKeyStore) Load() error {
	if h.path == "" {
		return fmt.Errorf("ssh host key: no file configured: %w", os.ErrNotExist)
	}
	b, err := os.ReadFile(h.path)
	if err != nil {
		return fmt.Errorf("ssh host key: %w", err)
	}
	s, err := ParseHostKey(b)
	if err != nil {
		return fmt.Errorf("ssh host key %s: %w", h.path, err)
	}
	h.mu.Lock()
	h.signer = s
	h.mu.Unlock()
	return nil
}

// ParseHostKey parses an unencrypted private key in any format x/crypto/ssh reads
// (OpenSSH, PKCS#1, PKCS#8, SEC 1; ed25519, ECDSA or RSA). Encrypted keys are
// refused: the agent has no passphrase to open them with.
func ParseHostKey(pemBytes []byte) (ssh.Signer, error) {
	pemBytes = bytes.TrimSpace(pemBytes)
	if len(pemBytes) == 0 {
		return nil, errors.New("empty private key")
	}
	s, err := ssh.ParsePrivateKey(pemBytes)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, errors.New("the private key is encrypted; provision an unencrypted key (ssh-keygen -N '')")
	}
	if err != nil {
		return nil, fmt.Errorf("not a private key in OpenSSH or PEM format: %w", err)
	}
	return s, nil
}

// Set validates pemBytes, persists it (atomically, mode 0600) and makes it the
// key of new connections. On error nothing changes. It returns the new signer.
func (h *HostKeyStore) Set(pemBytes []byte) (ssh.Signer, error) {
	s, err := ParseHostKey(pemBytes)
	if err != nil {
		return nil, err
	}
	if h.path != "" {
		if err := writeAtomic(h.path, append(bytes.TrimSpace(pemBytes), '\n')); err != nil {
			return nil, fmt.Errorf("persist ssh host key %s: %w", h.path, err)
		}
	}
	h.mu.Lock()
	h.signer = s
	h.mu.Unlock()
	return s, nil
}

// Signer returns the current host key, nil when there is none yet.
func (h *HostKeyStore) Signer() ssh.Signer {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.signer
}
