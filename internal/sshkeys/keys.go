package sshkeys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// UserKeyName is the file name of the user key in ~/.ssh; the public half adds ".pub".
const UserKeyName = "banger_ed25519"

// userKeyComment is written into the key so `ssh-add -l` and authorized_keys say whose it is.
const userKeyComment = "banger"

// UserKey is the key the owner's ssh presents to every VM.
type UserKey struct {
	// PrivatePath is the OpenSSH private key (mode 0600), usable with `ssh -i`.
	PrivatePath string
	// PublicPath is PrivatePath + ".pub" (mode 0644).
	PublicPath string
	// AuthorizedLine is the public key as one authorized_keys line, comment included:
	// what bangerd hands to a guest's agent.
	AuthorizedLine string
	// Fingerprint is the SHA256 fingerprint as ssh-keygen -l prints it.
	Fingerprint string
}

// DefaultUserKeyPath is ~/.ssh/banger_ed25519 under home.
func DefaultUserKeyPath(home string) string {
	return filepath.Join(home, ".ssh", UserKeyName)
}

// EnsureUserKey returns the user key at path (its public half at path.pub), making an
// ed25519 key there first if there is none. It runs as the user who will use the key:
// the files belong to the caller.
//
// An existing private key is reused as long as it parses: it is never replaced, since
// the guests and the user may already trust it. A file that is not an unencrypted
// OpenSSH key, or a public half that does not match, is an error telling the user what
// to remove; a missing public half is rewritten from the private key. Two callers racing
// to create the key end up with the same one: the private key is published with a
// no-clobber link, and the loser reads the winner's.
func EnsureUserKey(path string) (UserKey, error) {
	if !filepath.IsAbs(path) {
		return UserKey{}, fmt.Errorf("user key path %q is not absolute", path)
	}
	k := UserKey{PrivatePath: path, PublicPath: path + ".pub"}
	signer, err := readUserKey(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(k.PublicPath); perr == nil {
			return UserKey{}, fmt.Errorf("user key: %s exists but %s does not: restore the private key or remove %s so banger makes a new pair", k.PublicPath, path, k.PublicPath)
		}
		signer, err = createUserKey(path)
	}
	if err != nil {
		return UserKey{}, err
	}
	k.AuthorizedLine = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + userKeyComment
	k.Fingerprint = ssh.FingerprintSHA256(signer.PublicKey())
	if err := ensurePublicHalf(k.PublicPath, signer.PublicKey(), k.AuthorizedLine); err != nil {
		return UserKey{}, err
	}
	return k, nil
}

// readUserKey parses the private key at path; os.ErrNotExist passes through.
func readUserKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("user key %s: %w", path, err)
	}
	s, err := ssh.ParsePrivateKey(b)
	var pm *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pm):
		return nil, fmt.Errorf("user key %s is protected by a passphrase, which banger cannot use unattended: move it away so banger makes a new key there", path)
	case err != nil:
		return nil, fmt.Errorf("user key %s is not a valid OpenSSH private key (%v): move it away so banger makes a new key there", path, err)
	}
	return s, nil
}

// createUserKey writes a fresh ed25519 key to path without ever replacing a file that
// appeared meanwhile: it is written whole to a temporary file and linked into place.
func createUserKey(path string) (ssh.Signer, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("user key directory %s: %w", dir, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate user key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, userKeyComment)
	if err != nil {
		return nil, fmt.Errorf("marshal user key: %w", err)
	}
	tmp, err := writeTemp(dir, "."+filepath.Base(path)+"-*", pem.EncodeToMemory(blk), 0o600)
	if err != nil {
		return nil, fmt.Errorf("user key %s: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			// Someone else made it first: use theirs.
			return readUserKey(path)
		}
		return nil, fmt.Errorf("user key %s: %w", path, err)
	}
	return ssh.NewSignerFromKey(priv)
}

// ensurePublicHalf writes line to path if it is missing, and checks it matches pub if not.
func ensurePublicHalf(path string, pub ssh.PublicKey, line string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return writeFileAtomic(path, []byte(line+"\n"), 0o644)
	}
	if err != nil {
		return fmt.Errorf("user public key %s: %w", path, err)
	}
	got, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil || !bytes.Equal(got.Marshal(), pub.Marshal()) {
		return fmt.Errorf("user public key %s does not match its private key %s: remove %s and banger will rewrite it", path, strings.TrimSuffix(path, ".pub"), path)
	}
	return nil
}

// NewHostKey makes an ed25519 host key for one VM. privatePEM is an OpenSSH private key
// file (what the guest agent's SSH server loads); publicAuthorizedLine is "ssh-ed25519
// AAAA...", the form KnownHosts.Set takes.
func NewHostKey() (privatePEM []byte, publicAuthorizedLine string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate host key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, "", fmt.Errorf("marshal host key: %w", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", fmt.Errorf("host public key: %w", err)
	}
	return pem.EncodeToMemory(blk), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))), nil
}

// writeTemp writes data to a new file in dir named after pattern, with mode perm, synced.
func writeTemp(dir, pattern string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(perm), f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// writeFileAtomic replaces path with data (mode perm) by renaming a complete temporary
// file over it, so readers see the old content or the new, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*", data, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
