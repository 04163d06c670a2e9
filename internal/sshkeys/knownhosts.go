package sshkeys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// knownHostsHeader opens a known_hosts file this package creates.
const knownHostsHeader = "# Managed by banger (bangerd): one line per VM, rewritten as VMs come and go. Do not edit.\n"

// KnownHosts is banger's known_hosts file. Methods are safe for concurrent use from
// goroutines and processes: each takes an flock on Path()+".lock" and rewrites the file
// by renaming a complete copy over it.
type KnownHosts struct {
	path string // immutable
}

// KnownHostsEntry is one host key and the names it is known under.
type KnownHostsEntry struct {
	// Names are host names or addresses as ssh looks them up: "dev.vm", "172.30.77.5",
	// or "[host]:port" for a port other than 22.
	Names []string
	// Key is the public key in authorized_keys form: "ssh-ed25519 AAAA...".
	Key string
}

// NewKnownHosts returns the known_hosts file at path (absolute). The file and its
// directory are made on the first write.
func NewKnownHosts(path string) (*KnownHosts, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("known_hosts path %q is not absolute", path)
	}
	return &KnownHosts{path: path}, nil
}

// Path is the file ssh reads (UserKnownHostsFile).
func (k *KnownHosts) Path() string { return k.path }

// Set makes pubkey the one key known for each of names: earlier lines naming any of them
// lose those names (and go if none remain), then one line with all the names is added.
func (k *KnownHosts) Set(names []string, pubkey string) error {
	e, err := normalizeEntry(KnownHostsEntry{Names: names, Key: pubkey})
	if err != nil {
		return err
	}
	return k.update(func(lines []string) []string {
		return append(dropNames(lines, e.Names), entryLine(e))
	})
}

// Remove forgets every key known for names; names with no line are not an error.
func (k *KnownHosts) Remove(names []string) error {
	norm, err := normalizeNames(names)
	if err != nil {
		return err
	}
	return k.update(func(lines []string) []string { return dropNames(lines, norm) })
}

// Sync replaces the whole file with entries: what bangerd does on open, from the VMs its
// store holds, so lines left by a crash between a VM's removal and Remove do not linger.
func (k *KnownHosts) Sync(entries []KnownHostsEntry) error {
	norm := make([]KnownHostsEntry, 0, len(entries))
	for _, e := range entries {
		n, err := normalizeEntry(e)
		if err != nil {
			return err
		}
		norm = append(norm, n)
	}
	return k.update(func([]string) []string {
		lines := []string{strings.TrimSuffix(knownHostsHeader, "\n")}
		for _, e := range norm {
			lines = append(dropNames(lines, e.Names), entryLine(e))
		}
		return lines
	})
}

// update runs edit over the file's lines (header and comments included) under the lock
// and writes the result back atomically.
func (k *KnownHosts) update(edit func([]string) []string) error {
	dir := filepath.Dir(k.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("known_hosts directory %s: %w", dir, err)
	}
	unlock, err := lockFile(k.path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()

	old, err := os.ReadFile(k.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("known_hosts %s: %w", k.path, err)
	}
	if len(old) == 0 {
		old = []byte(knownHostsHeader)
	}
	lines := strings.Split(strings.TrimSuffix(string(old), "\n"), "\n")
	lines = edit(lines)
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if bytes.Equal(b.Bytes(), old) {
		return nil
	}
	if err := writeFileAtomic(k.path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	return nil
}

// lockFile takes an exclusive flock on path (created if needed) and returns its release.
// flock locks belong to the open file description, so each call conflicts with every
// other, in this process or another.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the last descriptor releases the lock
}

// dropNames removes names from the host field of every plain known_hosts line, dropping
// lines left with no host. Comments, blank lines, hashed hosts and @-marker lines are
// kept as they are: banger never writes them, and they are not its to delete.
func dropNames(lines, names []string) []string {
	out := lines[:0:0]
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || t[0] == '#' || t[0] == '@' || t[0] == '|' {
			out = append(out, l)
			continue
		}
		hostField, rest := t, ""
		if i := strings.IndexAny(t, " \t"); i >= 0 {
			hostField, rest = t[:i], t[i:]
		}
		var keep []string
		for _, h := range strings.Split(hostField, ",") {
			if !slices.Contains(names, strings.ToLower(h)) {
				keep = append(keep, h)
			}
		}
		switch {
		case len(keep) == 0:
		case len(keep) == len(strings.Split(hostField, ",")):
			out = append(out, l)
		default:
			out = append(out, strings.Join(keep, ",")+" "+strings.TrimSpace(rest))
		}
	}
	return out
}

func entryLine(e KnownHostsEntry) string {
	return strings.Join(e.Names, ",") + " " + e.Key
}

// normalizeEntry validates e and returns it with lower-case names and the key reduced to
// "type base64" (no comment, no options).
func normalizeEntry(e KnownHostsEntry) (KnownHostsEntry, error) {
	names, err := normalizeNames(e.Names)
	if err != nil {
		return KnownHostsEntry{}, err
	}
	if len(names) == 0 {
		return KnownHostsEntry{}, errors.New("known_hosts: no host names given for the key")
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(e.Key))
	if err != nil {
		return KnownHostsEntry{}, fmt.Errorf("known_hosts %s: host key %q is not an authorized_keys line (\"ssh-ed25519 AAAA...\"): %w", strings.Join(names, ","), e.Key, err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	return KnownHostsEntry{Names: names, Key: key}, nil
}

// hostName is what may appear as one known_hosts host: a name or address, or
// "[name]:port". No pattern characters (*?!), commas or spaces, which would change
// what the line matches.
var hostName = regexp.MustCompile(`^([a-z0-9_]([a-z0-9_.:-]*[a-z0-9_.])?|\[[a-z0-9_.:-]+\]:[0-9]{1,5})$`)

// normalizeNames lower-cases names (ssh compares host names case-insensitively) and
// rejects anything that is not a plain host, dropping duplicates.
func normalizeNames(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		l := strings.ToLower(n)
		if !hostName.MatchString(l) {
			return nil, fmt.Errorf("known_hosts: %q is not a host name or address ssh could look up: use a name such as dev.vm, an IP, or [host]:port", n)
		}
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out, nil
}
