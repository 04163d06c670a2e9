package sshkeys

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// publicOf asks the real ssh-keygen for the public key of a private key file, without
// its comment: "ssh-ed25519 AAAA...".
func publicOf(t *testing.T, privPath string) string {
	t.Helper()
	f := strings.Fields(run(t, "ssh-keygen", "-y", "-f", privPath))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -y -f %s printed %q", privPath, f)
	}
	return f[0] + " " + f[1]
}

func typeAndKey(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return f[0] + " " + f[1]
}

func TestEnsureUserKeyCreatesWhatOpenSSHReads(t *testing.T) {
	requireTools(t, "ssh-keygen")
	home := t.TempDir()
	path := DefaultUserKeyPath(home)
	k, err := EnsureUserKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.PublicPath, path+".pub"; got != want {
		t.Errorf("PublicPath: got %q, want %q", got, want)
	}
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{path, 0o600}, {path + ".pub", 0o644}, {filepath.Dir(path), 0o700 | os.ModeDir}} {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != c.want {
			t.Errorf("mode of %s: got %v, want %v", c.path, st.Mode(), c.want)
		}
	}
	if got, want := publicOf(t, path), typeAndKey(k.AuthorizedLine); got != want {
		t.Errorf("ssh-keygen -y: got %q, want %q", got, want)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(pub)), k.AuthorizedLine; got != want {
		t.Errorf(".pub: got %q, want %q", got, want)
	}
	if !strings.HasPrefix(k.AuthorizedLine, "ssh-ed25519 ") {
		t.Errorf("key type: got %q, want ssh-ed25519", k.AuthorizedLine)
	}
	// ssh-keygen -l prints the same fingerprint.
	if got := run(t, "ssh-keygen", "-l", "-f", path); !strings.Contains(got, k.Fingerprint) {
		t.Errorf("ssh-keygen -l: got %q, want fingerprint %s", got, k.Fingerprint)
	}
	again, err := EnsureUserKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if again != k {
		t.Errorf("second call: got %+v, want the same key %+v", again, k)
	}
}

func TestEnsureUserKeyReusesAKeyMadeBySSHKeygen(t *testing.T) {
	requireTools(t, "ssh-keygen")
	path := filepath.Join(t.TempDir(), "id")
	run(t, "ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "mine", "-f", path)
	os.Remove(path + ".pub") // a lost public half is rewritten
	k, err := EnsureUserKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := typeAndKey(k.AuthorizedLine), publicOf(t, path); got != want {
		t.Errorf("got %q, want the existing key %q", got, want)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("public half not rewritten: %v", err)
	}
	if got, want := typeAndKey(string(pub)), publicOf(t, path); got != want {
		t.Errorf(".pub: got %q, want %q", got, want)
	}
}

func TestEnsureUserKeyRefusesBadFiles(t *testing.T) {
	requireTools(t, "ssh-keygen")
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		want    string
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a valid OpenSSH private key"},
		{"passphrase", func(t *testing.T, path string) {
			run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", path)
		}, "passphrase"},
		{"public half of another key", func(t *testing.T, path string) {
			run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path)
			other := filepath.Join(filepath.Dir(path), "other")
			run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
			if err := os.Rename(other+".pub", path+".pub"); err != nil {
				t.Fatal(err)
			}
		}, "does not match"},
		{"public half alone", func(t *testing.T, path string) {
			if err := os.WriteFile(path+".pub", []byte("ssh-ed25519 AAAA\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "restore the private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key")
			tt.prepare(t, path)
			before, _ := os.ReadFile(path)
			_, err := EnsureUserKey(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Errorf("the existing file was changed")
			}
		})
	}
}

func TestEnsureUserKeyConcurrentCallersAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh", "key")
	const n = 10
	keys := make([]UserKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = EnsureUserKey(path)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if keys[i] != keys[0] {
			t.Errorf("caller %d: got %s, want %s", i, keys[i].Fingerprint, keys[0].Fingerprint)
		}
	}
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".*"))
	if err != nil || len(left) != 0 {
		t.Errorf("temporary files left: %v %v", left, err)
	}
}

func TestNewHostKeyIsReadByOpenSSH(t *testing.T) {
	requireTools(t, "ssh-keygen")
	priv, line, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "host_key")
	if err := os.WriteFile(path, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := publicOf(t, path); got != line {
		t.Errorf("ssh-keygen -y: got %q, want %q", got, line)
	}
	if !strings.HasPrefix(string(priv), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("private key is not in OpenSSH format: %.40q", priv)
	}
	_, line2, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	if line2 == line {
		t.Error("two host keys are the same")
	}
}
