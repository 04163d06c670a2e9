package layout

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// owner is an unprivileged uid:gid the root-only tests hand directories to; no
// such user needs to exist for chown.
const owner = 12345

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
	requireRoot(t)
	l := newLayout(t)
	if err := l.Create(owner, owner); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{l.Root, l.SystemDir()} {
		if uid, mode := stat(t, d); uid != 0 || mode != 0o755 {
			t.Errorf("%s: uid %d mode %#o, want root's 0755: config.toml, install.json, the helper's logs and pid records live there", d, uid, mode)
		}
	}
	for _, d := range l.OwnerDirs() {
		if uid, mode := stat(t, d); uid != owner || mode != 0o750 {
			t.Errorf("%s: uid %d mode %#o, want the owner %d, 0750", d, uid, mode, owner)
		}
	}
	// Again, now that the owner has them: nothing changes, nothing fails.
	if err := l.Create(owner, owner); err != nil {
		t.Fatalf("second Create: %v", err)
	}
}

// TestCreateHandsOverRootsOwnDirs: a root prepared by root earlier (bangerd once
// ran as root, or tests called Create(-1, -1) as root) is handed over whole,
// nested directories included, since nobody but root could have made them.
func TestCreateHandsOverRootsOwnDirs(t *testing.T) {
	requireRoot(t)
	l := newLayout(t)
	if err := l.Create(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := l.Create(owner, owner); err != nil {
		t.Fatal(err)
	}
	for _, d := range l.OwnerDirs() {
		if uid, _ := stat(t, d); uid != owner {
			t.Errorf("%s: uid %d, want the owner %d", d, uid, owner)
		}
	}
}

// TestAttackCreateRefusesOwnerPlants: the owner has run/, state/ and logs/ and
// plants things where Create expects its directories. Create run by root must
// refuse, follow nothing and leave every target exactly as it was.
func TestAttackCreateRefusesOwnerPlants(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		plant func(t *testing.T, l Layout, target string)
		want  string
	}{
		{"symlink run/vms to a root directory", func(t *testing.T, l Layout, target string) {
			mustSymlink(t, target, l.VMSocketDir())
		}, "is a symlink"},
		{"symlink state/images to a root directory", func(t *testing.T, l Layout, target string) {
			mustSymlink(t, target, l.ImagesDir())
		}, "is a symlink"},
		{"symlink state/disks through a relative link", func(t *testing.T, l Layout, target string) {
			rel, _ := filepath.Rel(l.StateDir, target)
			mustSymlink(t, rel, l.DisksDir())
		}, "is a symlink"},
		{"a root directory inside the owner's state/", func(t *testing.T, l Layout, target string) {
			// Nobody can tell whether root made it or was tricked into making it
			// there: it is not handed over.
			if err := os.Mkdir(l.KernelsDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(l.KernelsDir(), 0, 0); err != nil {
				t.Fatal(err)
			}
		}, "banger will not hand over what it did not create"},
		{"a regular file where run/vms is expected", func(t *testing.T, l Layout, target string) {
			if err := os.WriteFile(l.VMSocketDir(), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			_ = os.Chown(l.VMSocketDir(), owner, owner)
		}, "is not a directory"},
		{"a directory of another user", func(t *testing.T, l Layout, target string) {
			if err := os.Mkdir(l.DisksDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			_ = os.Chown(l.DisksDir(), owner+1, owner+1)
		}, "belongs to uid 12346"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLayout(t)
			// The owner's tree as an earlier `system run` left it.
			if err := l.Create(owner, owner); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{l.VMSocketDir(), l.ImagesDir(), l.KernelsDir(), l.DisksDir()} {
				if err := os.Remove(d); err != nil {
					t.Fatal(err)
				}
			}
			// The target: a root directory with a root file in it, like /etc.
			target := filepath.Join(t.TempDir(), "etc")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(target, "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			tt.plant(t, l, target)
			err := l.Create(owner, owner)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create: %v, want an error saying %q", err, tt.want)
			}
			for _, p := range []string{target, filepath.Join(target, "passwd")} {
				if uid, mode := stat(t, p); uid != 0 || (mode != 0o755 && mode != 0o644) {
					t.Errorf("%s changed: uid %d mode %#o, want root's, unchanged", p, uid, mode)
				}
			}
			if tt.name != "a root directory inside the owner's state/" {
				return
			}
			if uid, _ := stat(t, l.KernelsDir()); uid != 0 {
				t.Errorf("a root directory in the owner's state/ was handed over (uid %d)", uid)
			}
		})
	}
}

func TestAttackCreateRefusesUntrustedRoot(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, root string)
		want  string
	}{
		{"root owned by the owner", func(t *testing.T, root string) {
			if err := os.Chown(root, owner, owner); err != nil {
				t.Fatal(err)
			}
		}, "belongs to uid 12345"},
		{"root writable by others", func(t *testing.T, root string) {
			if err := os.Chmod(root, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "writable by group or others"},
		{"root below a directory of the owner", func(t *testing.T, root string) {
			if err := os.Chown(filepath.Dir(root), owner, owner); err != nil {
				t.Fatal(err)
			}
		}, "belongs to uid 12345"},
		{"ROOT/system is a symlink", func(t *testing.T, root string) {
			mustSymlink(t, t.TempDir(), filepath.Join(root, "system"))
		}, "is a symlink"},
		{"ROOT/system is writable by others", func(t *testing.T, root string) {
			if err := os.Mkdir(filepath.Join(root, "system"), 0o777); err != nil {
				t.Fatal(err)
			}
			_ = os.Chmod(filepath.Join(root, "system"), 0o777)
		}, "writable by no one else"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := shortTemp(t)
			root := filepath.Join(parent, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, root)
			l, err := New(root)
			if err != nil {
				t.Fatal(err)
			}
			err = l.Create(owner, owner)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create: %v, want an error saying %q", err, tt.want)
			}
			if _, err := os.Lstat(l.RunDir); !os.IsNotExist(err) {
				t.Errorf("run/ was made under an untrusted root (%v)", err)
			}
		})
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
}

func newLayout(t *testing.T) Layout {
	t.Helper()
	l, err := New(filepath.Join(shortTemp(t), "root"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// shortTemp is a temporary directory with a path short enough for socket paths.
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "lt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func stat(t *testing.T, p string) (uint32, os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid, fi.Mode().Perm() | fi.Mode()&os.ModeSticky
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_ = os.Lchown(link, owner, owner)
}
