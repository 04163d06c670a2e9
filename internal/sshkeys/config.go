package sshkeys

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/layout"
)

// Paths are where the SSH material of one banger root and one user lives.
type Paths struct {
	// UserKey is the user's private key; the public half is UserKey + ".pub".
	UserKey string
	// KnownHosts is banger's known_hosts file for this root.
	KnownHosts string
	// SSHConfig is the ssh_config for this root, included from UserConfig.
	SSHConfig string
	// UserConfig is the user's own ~/.ssh/config.
	UserConfig string
}

// PathsFor returns the paths for the banger root l and the user whose home is home.
func PathsFor(l layout.Layout, home string) Paths {
	dir := filepath.Join(l.StateDir, "ssh")
	return Paths{
		UserKey:    DefaultUserKeyPath(home),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		SSHConfig:  filepath.Join(dir, "ssh_config"),
		UserConfig: filepath.Join(home, ".ssh", "config"),
	}
}

// ConfigOptions is what the generated ssh_config refers to. Every path is absolute.
type ConfigOptions struct {
	// Domain is the VM domain: hosts matching *.<Domain> get the settings.
	Domain string
	// User is the login on the guest; empty means root.
	User string
	// UserKey is the private key ssh offers (IdentityFile).
	UserKey string
	// KnownHosts is banger's known_hosts file (UserKnownHostsFile).
	KnownHosts string
	// Banger is the banger CLI binary the ProxyCommand runs.
	Banger string
	// Root is the banger root the ProxyCommand passes with --root.
	Root string
}

// domainPattern is a DNS name in lower case: what config.DNS.Domain allows.
var domainPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// loginPattern is a conservative user name.
var loginPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)

// RenderConfig returns the ssh_config text for o; see the package documentation for
// what each line is for.
func RenderConfig(o ConfigOptions) ([]byte, error) {
	if !domainPattern.MatchString(o.Domain) {
		return nil, fmt.Errorf("ssh_config: domain %q is not a DNS name such as \"vm\"", o.Domain)
	}
	user := o.User
	if user == "" {
		user = "root"
	}
	if !loginPattern.MatchString(user) {
		return nil, fmt.Errorf("ssh_config: user %q is not a valid login name", user)
	}
	for _, p := range []struct{ what, path string }{
		{"user key", o.UserKey}, {"known_hosts", o.KnownHosts}, {"banger binary", o.Banger}, {"banger root", o.Root},
	} {
		if err := checkConfigPath(p.what, p.path); err != nil {
			return nil, fmt.Errorf("ssh_config: %w", err)
		}
	}
	pattern := "*." + o.Domain
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Managed by banger: SSH settings for the VMs of the banger root %s.\n", o.Root)
	b.WriteString("# Rewritten by bangerd; edits are lost. Hook it into ~/.ssh/config with `banger ssh-config --install`.\n\n")
	fmt.Fprintf(&b, "Host %s\n", pattern)
	fmt.Fprintf(&b, "    User %s\n", user)
	fmt.Fprintf(&b, "    IdentityFile %s\n", configQuote(o.UserKey))
	b.WriteString("    IdentitiesOnly yes\n")
	fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", configQuote(o.KnownHosts))
	b.WriteString("    StrictHostKeyChecking yes\n")
	b.WriteString("    UpdateHostKeys no\n")
	b.WriteString("    CheckHostIP no\n\n")
	b.WriteString("# Names that do not resolve here (no systemd-resolved route for the domain) go\n")
	b.WriteString("# through banger, which knows each VM's address.\n")
	fmt.Fprintf(&b, "Match host %s !exec \"getent ahosts %%h\"\n", pattern)
	fmt.Fprintf(&b, "    ProxyCommand %s --root %s vm ssh-proxy %%h %%p\n", shellQuote(escapePercent(o.Banger)), shellQuote(escapePercent(o.Root)))
	return b.Bytes(), nil
}

// WriteConfig renders o and writes it to path (mode 0644), making its directory.
func WriteConfig(path string, o ConfigOptions) error {
	data, err := RenderConfig(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("ssh_config directory: %w", err)
	}
	return writeFileAtomic(path, data, 0o644)
}

// checkConfigPath refuses what ssh_config cannot carry: relative paths, and characters
// that would end the quoted string or the line.
func checkConfigPath(what, p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s path %q is not absolute", what, p)
	}
	if strings.ContainsAny(p, "\"\\\n\r\x00") {
		return fmt.Errorf("%s path %q contains a quote, backslash or control character, which ssh_config cannot carry: choose another location", what, p)
	}
	return nil
}

// escapePercent protects '%' from ssh's token expansion (%h, %d, ...).
func escapePercent(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// configQuote quotes an ssh_config argument (tokens escaped), so paths with spaces
// stay one argument.
func configQuote(s string) string { return `"` + escapePercent(s) + `"` }

// shellQuote quotes s for the shell ssh runs ProxyCommand with: ssh passes the rest of
// the ProxyCommand line to the shell untouched.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
