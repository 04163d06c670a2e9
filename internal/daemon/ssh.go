package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/portfwd"
	"banger/internal/sshkeys"
)

// sshMaterial is the VM service's view of SSH: the owner's key, one host key
// per VM (kept under ROOT/state/ssh/hostkeys so every boot provisions the same
// one), and banger's known_hosts.
type sshMaterial struct {
	user     sshkeys.UserKey
	userErr  error // why there is no user key (VM creation reports it)
	known    *sshkeys.KnownHosts
	hostKeys string
}

// openSSH makes or loads the owner's key — in ~/.ssh, or under the root when the
// owner has no writable home — and writes this root's ssh_config.
func openSSH(o Options) (*sshMaterial, error) {
	home := o.Home
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	paths := sshkeys.PathsFor(o.Layout, home)
	m := &sshMaterial{hostKeys: filepath.Join(o.Layout.StateDir, "ssh", "hostkeys")}
	if err := os.MkdirAll(m.hostKeys, 0o700); err != nil {
		return nil, err
	}
	user, err := sshkeys.EnsureUserKey(paths.UserKey)
	if err != nil && home != "" {
		fallback := filepath.Join(o.Layout.StateDir, "ssh", sshkeys.UserKeyName)
		if user, err = sshkeys.EnsureUserKey(fallback); err == nil {
			paths.UserKey = fallback
		}
	}
	m.user, m.userErr = user, err
	if m.known, err = sshkeys.NewKnownHosts(paths.KnownHosts); err != nil {
		return nil, err
	}
	if o.BangerPath != "" && m.userErr == nil {
		if err := sshkeys.WriteConfig(paths.SSHConfig, sshkeys.ConfigOptions{
			Domain: o.Config.DNS.Domain, UserKey: paths.UserKey, KnownHosts: paths.KnownHosts, Banger: o.BangerPath, Root: o.Layout.Root,
		}); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *sshMaterial) AuthorizedKey() (string, error) {
	if m.userErr != nil {
		return "", fmt.Errorf("no ssh user key: %w", m.userErr)
	}
	return m.user.AuthorizedLine, nil
}

func (m *sshMaterial) keyPath(vmID string) string { return filepath.Join(m.hostKeys, vmID) }

// HostKey returns the VM's host key, making it on first use.
func (m *sshMaterial) HostKey(vmID string) ([]byte, string, error) {
	p := m.keyPath(vmID)
	priv, err := os.ReadFile(p)
	if err == nil {
		pub, perr := os.ReadFile(p + ".pub")
		if perr == nil {
			return priv, strings.TrimSpace(string(pub)), nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	priv, pub, err := sshkeys.NewHostKey()
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(p+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(p, priv, 0o600); err != nil {
		return nil, "", err
	}
	return priv, pub, nil
}

func (m *sshMaterial) DeleteHostKey(vmID string) error {
	err := errors.Join(os.Remove(m.keyPath(vmID)), os.Remove(m.keyPath(vmID)+".pub"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (m *sshMaterial) Trust(names []string, pub string) error { return m.known.Set(names, pub) }
func (m *sshMaterial) Forget(names []string) error            { return m.known.Remove(names) }

// ports adapts the forwarder to the VM service's Ports.
type ports struct{ f *portfwd.Forwarder }

func (p ports) Publish(ctx context.Context, vmID string, specs []string, guest netip.Addr) error {
	parsed, err := portfwd.ParseSpecs(specs)
	if err != nil {
		return err
	}
	return p.f.AddAll(ctx, vmID, parsed, guest)
}

func (p ports) Unpublish(vmID string) { p.f.Remove(vmID) }

func (p ports) Check(vmID string, specs []string) error {
	parsed, err := portfwd.ParseSpecs(specs)
	if err != nil {
		return err
	}
	return p.f.Check(vmID, parsed)
}
