package privileged

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"banger/internal/trustfs"
)

// InstallMetadata is ROOT/install.json, written by `banger system install|run`. The
// helper reads it at start-up to learn who its owner is when no --owner-uid is given.
type InstallMetadata struct {
	OwnerUID int       `json:"owner_uid"`
	OwnerGID int       `json:"owner_gid"`
	Version  string    `json:"version"`
	Root     string    `json:"root"`
	Created  time.Time `json:"created"`
}

// maxInstallMetadata bounds the file; it is a few dozen bytes.
const maxInstallMetadata = 64 << 10

// ReadInstallMetadata reads and checks path. A missing file is an error wrapping
// fs.ErrNotExist whose message says how to create it.
func ReadInstallMetadata(path string) (InstallMetadata, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return InstallMetadata{}, fmt.Errorf("no install metadata at %s: run `banger system install` (or `banger system run`), or pass --owner-uid and --owner-gid: %w", path, err)
	}
	if err != nil {
		return InstallMetadata{}, fmt.Errorf("install metadata: %w", err)
	}
	return ParseInstallMetadata(data, path)
}

// ReadTrustedInstallMetadata is ReadInstallMetadata for root: the file must be
// root's, writable by root only, a regular file with one link in directories only
// root can change (trustfs.OpenRootFile), and is read through the descriptor that
// was checked. The owner it names is who banger-helper serves, so a file the owner
// could write would let the owner pick whom root obeys. A missing file is an error
// wrapping fs.ErrNotExist.
func ReadTrustedInstallMetadata(path string) (InstallMetadata, error) {
	data, err := trustfs.ReadRootFile(path, maxInstallMetadata)
	if errors.Is(err, fs.ErrNotExist) {
		return InstallMetadata{}, fmt.Errorf("no install metadata at %s: run `banger system install` (or `banger system run`), or pass --owner-uid and --owner-gid: %w", path, err)
	}
	if err != nil {
		return InstallMetadata{}, fmt.Errorf("install metadata: %w", err)
	}
	return ParseInstallMetadata(data, path)
}

// ParseInstallMetadata decodes and checks the content of the install metadata file
// at path (for messages).
func ParseInstallMetadata(data []byte, path string) (InstallMetadata, error) {
	if len(data) > maxInstallMetadata {
		return InstallMetadata{}, fmt.Errorf("install metadata %s is %d bytes, more than it can be: rewrite it with `banger system install`", path, len(data))
	}
	m := InstallMetadata{OwnerUID: -1, OwnerGID: -1}
	if err := json.Unmarshal(data, &m); err != nil {
		return InstallMetadata{}, fmt.Errorf("install metadata %s: %w: rewrite it with `banger system install`", path, err)
	}
	if m.OwnerUID < 0 || m.OwnerGID < 0 {
		return InstallMetadata{}, fmt.Errorf("install metadata %s has no owner_uid/owner_gid: rewrite it with `banger system install`", path)
	}
	return m, nil
}

// WriteInstallMetadata writes m to path atomically (temp file and rename), mode 0644:
// readable by everyone, writable only by whoever wrote it.
func WriteInstallMetadata(path string, m InstallMetadata) (err error) {
	if m.OwnerUID < 0 || m.OwnerGID < 0 {
		return fmt.Errorf("install metadata: owner uid/gid %d:%d must be set", m.OwnerUID, m.OwnerGID)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("install metadata: %w", err)
	}
	data = append(data, '\n')
	f, err := os.CreateTemp(filepath.Dir(path), ".install-*.json")
	if err != nil {
		return fmt.Errorf("install metadata: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("install metadata: write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("install metadata: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("install metadata: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("install metadata: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("install metadata: %w", err)
	}
	return nil
}
