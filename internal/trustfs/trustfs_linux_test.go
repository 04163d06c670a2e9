package trustfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const stranger = 4242 // a uid that is not root

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: the files under test must be root's and another uid's")
	}
}

// TestOpenRootFile covers every way a file root reads could be someone else's: the
// file's owner, mode, kind and links, and each directory above it.
func TestOpenRootFile(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, dir, file string) // file is dir/sub/config.toml, written root:root 0644
		wantErr string                               // "" accepts; "notexist" wants fs.ErrNotExist
	}{
		{"root's 0644", func(t *testing.T, dir, file string) {}, ""},
		{"missing", func(t *testing.T, dir, file string) { must(t, os.Remove(file)) }, "notexist"},
		{"owned by another uid", func(t *testing.T, dir, file string) { must(t, os.Chown(file, stranger, stranger)) }, "chown root:root " + "FILE"},
		{"group-writable", func(t *testing.T, dir, file string) { must(t, os.Chmod(file, 0o664)) }, "chmod 644 FILE"},
		{"other-writable", func(t *testing.T, dir, file string) { must(t, os.Chmod(file, 0o646)) }, "writable by group or others"},
		{"two links", func(t *testing.T, dir, file string) { must(t, os.Link(file, filepath.Join(dir, "other"))) }, "2 hard links"},
		{"a symlink", func(t *testing.T, dir, file string) {
			must(t, os.Rename(file, filepath.Join(dir, "real")))
			must(t, os.Symlink(filepath.Join(dir, "real"), file))
		}, "is a symlink"},
		{"a fifo", func(t *testing.T, dir, file string) {
			must(t, os.Remove(file))
			must(t, mkfifo(file))
		}, "not a regular file"},
		{"parent owned by another uid", func(t *testing.T, dir, file string) { must(t, os.Chown(filepath.Dir(file), stranger, stranger)) }, "chown root:root " + "SUB"},
		{"parent group-writable", func(t *testing.T, dir, file string) { must(t, os.Chmod(filepath.Dir(file), 0o775)) }, "chmod go-w SUB"},
		{"parent sticky and world-writable", func(t *testing.T, dir, file string) { must(t, os.Chmod(filepath.Dir(file), os.ModeSticky|0o777)) }, ""},
		{"grandparent owned by another uid", func(t *testing.T, dir, file string) { must(t, os.Chown(dir, stranger, stranger)) }, "directory DIR belongs to uid 4242"},
		{"parent is a symlink", func(t *testing.T, dir, file string) {
			sub := filepath.Dir(file)
			must(t, os.Rename(sub, sub+".real"))
			must(t, os.Symlink(sub+".real", sub))
		}, "symlink or not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "root")
			sub := filepath.Join(dir, "sub")
			file := filepath.Join(sub, "config.toml")
			must(t, os.MkdirAll(sub, 0o755))
			must(t, os.Chmod(dir, 0o755))
			must(t, os.WriteFile(file, []byte("x = 1\n"), 0o644))
			tc.setup(t, dir, file)
			data, err := ReadRootFile(file, 1<<10)
			want := strings.NewReplacer("FILE", file, "SUB", sub, "DIR", dir).Replace(tc.wantErr)
			switch {
			case want == "" && err != nil:
				t.Fatalf("got %v, want the file accepted", err)
			case want == "" && string(data) != "x = 1\n":
				t.Fatalf("got %q, want the file's content", data)
			case want == "notexist" && !errors.Is(err, fs.ErrNotExist):
				t.Fatalf("got %v, want fs.ErrNotExist", err)
			case want != "" && want != "notexist" && (!errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), want)):
				t.Fatalf("got %v, want ErrUntrusted saying %q", err, want)
			}
		})
	}
}

// TestOpenBinary covers the binaries root executes: owner, mode and directories,
// and that Verify notices a binary replaced or loosened after the start.
func TestOpenBinary(t *testing.T) {
	requireRoot(t)
	setup := func(t *testing.T) (string, string) {
		dir := filepath.Join(t.TempDir(), "bin")
		must(t, os.Mkdir(dir, 0o755))
		bin := filepath.Join(dir, "jailer")
		must(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
		return dir, bin
	}
	t.Run("root's 0755 is accepted and runs by descriptor", func(t *testing.T) {
		_, bin := setup(t)
		b, err := OpenBinary(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if b.Path != bin {
			t.Errorf("Path: got %s, want %s", b.Path, bin)
		}
		if target, err := os.Readlink(b.ExecPath()); err != nil || target != bin {
			t.Errorf("ExecPath %s: got %q, %v; want a link to %s", b.ExecPath(), target, err, bin)
		}
		if err := b.Verify(); err != nil {
			t.Errorf("Verify: %v", err)
		}
	})
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir, bin string)
		want  string
	}{
		{"owned by another uid", func(t *testing.T, dir, bin string) { must(t, os.Chown(bin, stranger, stranger)) }, "belongs to uid 4242"},
		{"other-writable", func(t *testing.T, dir, bin string) { must(t, os.Chmod(bin, 0o757)) }, "writable by group or others"},
		{"not executable", func(t *testing.T, dir, bin string) { must(t, os.Chmod(bin, 0o644)) }, "not executable"},
		{"directory owned by another uid", func(t *testing.T, dir, bin string) { must(t, os.Chown(dir, stranger, stranger)) }, "belongs to uid 4242"},
		{"directory world-writable", func(t *testing.T, dir, bin string) { must(t, os.Chmod(dir, 0o777)) }, "chmod go-w"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, bin := setup(t)
			tc.setup(t, dir, bin)
			b, err := OpenBinary(bin)
			if err == nil {
				b.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrUntrusted saying %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir, bin string)
		want   string
	}{
		{"replaced", func(t *testing.T, dir, bin string) {
			must(t, os.WriteFile(bin+".new", []byte("#!/bin/sh\n"), 0o755))
			must(t, os.Rename(bin+".new", bin))
		}, "was replaced"},
		{"given away", func(t *testing.T, dir, bin string) { must(t, os.Chown(bin, stranger, stranger)) }, "belongs to uid 4242"},
		{"directory loosened", func(t *testing.T, dir, bin string) { must(t, os.Chmod(dir, 0o777)) }, "chmod go-w"},
	} {
		t.Run("Verify after "+tc.name, func(t *testing.T) {
			dir, bin := setup(t)
			b, err := OpenBinary(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			tc.change(t, dir, bin)
			if err := b.Verify(); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrUntrusted saying %q", err, tc.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
