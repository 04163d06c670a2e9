package layout

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name, flag, env, want string
	}{
		{"flag wins", "/tmp/a", "/tmp/b", "/tmp/a"},
		{"env next", "", "/tmp/b", "/tmp/b"},
		{"default last", "", "", DefaultRoot},
		{"relative made absolute", "rel", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvRoot, tt.env)
			l, err := Resolve(tt.flag)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" {
				wd, _ := os.Getwd()
				want = filepath.Join(wd, tt.flag)
			}
			if l.Root != want {
				t.Errorf("root = %q, want %q", l.Root, want)
			}
			if l.DaemonSocket() != filepath.Join(want, "run", "bangerd.sock") || l.StorePath() != filepath.Join(want, "state", "banger.db") {
				t.Errorf("paths not under the root: %s, %s", l.DaemonSocket(), l.StorePath())
			}
		})
	}
}

func TestNewRefusesRootTooLongForSockets(t *testing.T) {
	_, err := New("/" + strings.Repeat("x", 100))
	if err == nil || !strings.Contains(err.Error(), "too long for unix socket paths") {
		t.Fatalf("err = %v, want a too-long error", err)
	}
}

func TestCreate(t *testing.T) {
	l, err := New(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	for _, d := range l.Dirs() {
		st, err := os.Stat(d)
		if err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
}

func TestCreateGivesOwnerSubdirsNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	l, err := New(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(12345, 12345); err != nil {
		t.Fatal(err)
	}
	uid := func(p string) uint32 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Uid
	}
	if got := uid(l.Root); got != 0 {
		t.Errorf("root owned by %d, want root's: config.toml, install.json and the jail base live there", got)
	}
	for _, d := range []string{l.RunDir, l.StateDir, l.LogDir, l.DisksDir()} {
		if got := uid(d); got != 12345 {
			t.Errorf("%s owned by %d, want the owner 12345", d, got)
		}
	}
}
