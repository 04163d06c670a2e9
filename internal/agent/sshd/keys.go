package sshd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// KeyStore holds the public keys the SSH server accepts. The host sets them (over
// the control API or a provisioned file); there is no other way in: no passwords,
// no per-user authorized_keys files, so what the host set is exactly who gets in.
type KeyStore struct {
	path string // where the set is persisted; "" keeps it in memory only

	mu   sync.RWMutex // guards keys
	keys map[string]bool
}

// NewKeyStore returns a store persisted at path (read now if it exists). An empty
// path keeps the keys in memory.
func NewKeyStore(path string) (*KeyStore, error) {
	ks := &KeyStore{path: path, keys: map[string]bool{}}
	if path == "" {
		return ks, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ks, nil
	}
	if err != nil {
		return nil, fmt.Errorf("authorized keys %s: %w", path, err)
	}
	keys, err := parseKeys(strings.Split(string(b), "\n"))
	if err != nil {
		return nil, fmt.Errorf("authorized keys %s: %w", path, err)
	}
	ks.keys = keys
	return ks, nil
}

// parseKeys parses authorized_keys lines, skipping blanks and comments. Any line
// that does not parse fails the whole set, so a typo never silently drops a key.
func parseKeys(lines []string) (map[string]bool, error) {
	keys := map[string]bool{}
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys[string(k.Marshal())] = true
	}
	return keys, nil
}

// SetAuthorizedKeys replaces the set with lines and persists it; on error the old
// set stays. It returns the number of distinct keys.
func (ks *KeyStore) SetAuthorizedKeys(lines []string) (int, error) {
	keys, err := parseKeys(lines)
	if err != nil {
		return 0, err
	}
	if ks.path != "" {
		if err := writeAtomic(ks.path, []byte(strings.Join(lines, "\n")+"\n")); err != nil {
			return 0, fmt.Errorf("persist authorized keys: %w", err)
		}
	}
	ks.mu.Lock()
	ks.keys = keys
	ks.mu.Unlock()
	return len(keys), nil
}

// Count returns the number of distinct keys in the set.
func (ks *KeyStore) Count() int {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return len(ks.keys)
}

// Authorized reports whether key is in the set.
func (ks *KeyStore) Authorized(key ssh.PublicKey) bool {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.keys[string(key.Marshal())]
}

// writeAtomic replaces path with data, mode 0600: a reader (or an agent restarted
// after a crash) sees the old file or the new one, never a partial write.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := errors.Join(tmp.Chmod(0o600), tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// the rename itself is durable only once the directory is synced
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	return errors.Join(dir.Sync(), dir.Close())
}
