package sshkeys

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func newKnownHosts(t *testing.T) *KnownHosts {
	t.Helper()
	k, err := NewKnownHosts(filepath.Join(t.TempDir(), "state", "ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func hostKey(t *testing.T) string {
	t.Helper()
	_, line, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// lookup asks the real ssh-keygen which key the file holds for name ("" if none).
func lookup(t *testing.T, file, name string) string {
	t.Helper()
	out, err := runErr("ssh-keygen", "-F", name, "-f", file)
	if err != nil {
		return "" // exit status 1: not found
	}
	var keys []string
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("ssh-keygen -F %s: odd line %q", name, l)
		}
		keys = append(keys, f[1]+" "+f[2])
	}
	if len(keys) != 1 {
		t.Fatalf("ssh-keygen -F %s: got %d keys %q, want exactly one", name, len(keys), keys)
	}
	return keys[0]
}

func TestKnownHostsSetAndRemoveSeenBySSHKeygen(t *testing.T) {
	requireTools(t, "ssh-keygen")
	k := newKnownHosts(t)
	a, b := hostKey(t), hostKey(t)

	if err := k.Set([]string{"dev.vm", "172.30.77.5"}, a+" a comment"); err != nil {
		t.Fatal(err)
	}
	if err := k.Set([]string{"Other.VM", "[127.0.0.1]:2222"}, b); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"dev.vm": a, "172.30.77.5": a, "other.vm": b, "OTHER.vm": b, "[127.0.0.1]:2222": b, "nope.vm": ""} {
		if got := lookup(t, k.Path(), name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}

	// The IP moves to another VM: its old line loses it, dev.vm keeps its key.
	if err := k.Set([]string{"new.vm", "172.30.77.5"}, b); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"dev.vm": a, "172.30.77.5": b, "new.vm": b} {
		if got := lookup(t, k.Path(), name); got != want {
			t.Errorf("after the IP moved, %s: got %q, want %q", name, got, want)
		}
	}

	if err := k.Remove([]string{"dev.vm", "never.vm"}); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, k.Path(), "dev.vm"); got != "" {
		t.Errorf("after Remove, dev.vm: got %q, want no key", got)
	}
	data, err := os.ReadFile(k.Path())
	if err != nil {
		t.Fatal(err)
	}
	// dev.vm's line had only dev.vm left, so it is gone; comments are kept; names are exact.
	want := knownHostsHeader +
		"other.vm,[127.0.0.1]:2222 " + b + "\n" +
		"new.vm,172.30.77.5 " + b + "\n"
	if string(data) != want {
		t.Errorf("file:\ngot  %q\nwant %q", data, want)
	}
	if st, err := os.Stat(k.Path()); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode: got %v (%v), want 0644", st.Mode(), err)
	}
}

func TestKnownHostsKeepsLinesItDidNotWrite(t *testing.T) {
	k := newKnownHosts(t)
	a := hostKey(t)
	foreign := "# a comment\n|1|c2FsdA==|aGFzaA== " + a + "\n@revoked dev.vm " + a + "\nhost1,dev.vm\t" + a + "\n"
	if err := os.MkdirAll(filepath.Dir(k.Path()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.Path(), []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := k.Remove([]string{"dev.vm"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(k.Path())
	if err != nil {
		t.Fatal(err)
	}
	want := "# a comment\n|1|c2FsdA==|aGFzaA== " + a + "\n@revoked dev.vm " + a + "\nhost1 " + a + "\n"
	if string(data) != want {
		t.Errorf("got  %q\nwant %q", data, want)
	}
}

func TestKnownHostsRefusesBadInput(t *testing.T) {
	k := newKnownHosts(t)
	key := hostKey(t)
	tests := []struct {
		name  string
		names []string
		key   string
	}{
		{"no names", nil, key},
		{"pattern", []string{"*.vm"}, key},
		{"negation", []string{"!dev.vm"}, key},
		{"comma", []string{"a.vm,b.vm"}, key},
		{"space", []string{"a vm"}, key},
		{"hashed", []string{"|1|abc"}, key},
		{"marker", []string{"@revoked"}, key},
		{"empty", []string{""}, key},
		{"not a key", []string{"dev.vm"}, "ssh-ed25519 notbase64!"},
		{"no key", []string{"dev.vm"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := k.Set(tt.names, tt.key); err == nil {
				t.Errorf("Set(%q, %q): got nil error, want one", tt.names, tt.key)
			}
		})
	}
	if _, err := os.Stat(k.Path()); !os.IsNotExist(err) {
		t.Errorf("a refused Set wrote the file: %v", err)
	}
}

func TestKnownHostsConcurrentWritersLoseNothing(t *testing.T) {
	requireTools(t, "ssh-keygen")
	k := newKnownHosts(t)
	const n = 20
	keys := make([]string, n)
	for i := range keys {
		keys[i] = hostKey(t)
	}
	// Each goroutine sets its own names, sets a throw-away name, and removes it again,
	// so writes and removals interleave; a lost update would drop someone's line.
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tmp := fmt.Sprintf("tmp%d.vm", i)
			errs <- k.Set([]string{fmt.Sprintf("vm%d.vm", i), fmt.Sprintf("172.30.77.%d", i+2)}, keys[i])
			errs <- k.Set([]string{tmp}, keys[i])
			errs <- k.Remove([]string{tmp})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if got := lookup(t, k.Path(), fmt.Sprintf("vm%d.vm", i)); got != keys[i] {
			t.Errorf("vm%d.vm: got %q, want %q", i, got, keys[i])
		}
		if got := lookup(t, k.Path(), fmt.Sprintf("172.30.77.%d", i+2)); got != keys[i] {
			t.Errorf("172.30.77.%d: got %q, want %q", i+2, got, keys[i])
		}
		if got := lookup(t, k.Path(), fmt.Sprintf("tmp%d.vm", i)); got != "" {
			t.Errorf("tmp%d.vm: got %q, want it removed", i, got)
		}
	}
	data, err := os.ReadFile(k.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(string(data), "\n"), n+1; got != want {
		t.Errorf("lines: got %d, want %d (header + one per VM):\n%s", got, want, data)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(k.Path()), ".known_hosts-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestKnownHostsSyncReplacesEverything(t *testing.T) {
	requireTools(t, "ssh-keygen")
	k := newKnownHosts(t)
	a, b := hostKey(t), hostKey(t)
	if err := k.Set([]string{"gone.vm"}, a); err != nil {
		t.Fatal(err)
	}
	if err := k.Sync([]KnownHostsEntry{{Names: []string{"dev.vm", "172.30.77.2"}, Key: a}, {Names: []string{"web.vm"}, Key: b}}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"gone.vm": "", "dev.vm": a, "172.30.77.2": a, "web.vm": b} {
		if got := lookup(t, k.Path(), name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if err := k.Sync([]KnownHostsEntry{{Names: []string{"*"}, Key: a}}); err == nil {
		t.Error("Sync with a pattern: got nil error, want one")
	}
}
