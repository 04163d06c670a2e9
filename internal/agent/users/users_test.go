package users

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func writeDB(t *testing.T) DB {
	t.Helper()
	dir := t.TempDir()
	passwd := "# comment\nroot:x:0:0:root:/root:/bin/bash\nbroken line\ndev:x:1000:1000:Dev:/home/dev:\nsvc:x:999:999::/nonexistent:/usr/sbin/nologin\n"
	group := "root:x:0:\nwheel:x:10:dev,other\ndocker:x:998:dev\ndev:x:1000:\nbad\n"
	db := DB{PasswdPath: filepath.Join(dir, "passwd"), GroupPath: filepath.Join(dir, "group")}
	if err := os.WriteFile(db.PasswdPath, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db.GroupPath, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestLookup(t *testing.T) {
	db := writeDB(t)
	u, err := db.Lookup("dev")
	if err != nil {
		t.Fatal(err)
	}
	want := User{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 10, 998}, Home: "/home/dev"}
	if !reflect.DeepEqual(u, want) {
		t.Errorf("Lookup(dev): got %+v, want %+v", u, want)
	}
	if u.ShellOrDefault() != "/bin/sh" {
		t.Errorf("empty shell: got %q, want /bin/sh", u.ShellOrDefault())
	}
	if u, err := db.LookupUID(0); err != nil || u.Name != "root" || u.Shell != "/bin/bash" {
		t.Errorf("LookupUID(0): got %+v, %v", u, err)
	}
	if _, err := db.Lookup("nobody-here"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: got %v, want ErrUnknownUser", err)
	}
	if _, err := (DB{PasswdPath: "/no/such/passwd"}).Lookup("root"); err == nil || errors.Is(err, ErrUnknownUser) {
		t.Errorf("missing passwd file: got %v, want an I/O error", err)
	}
	noGroups := DB{PasswdPath: db.PasswdPath, GroupPath: "/no/such/group"}
	if u, err := noGroups.Lookup("dev"); err != nil || !reflect.DeepEqual(u.Groups, []uint32{1000}) {
		t.Errorf("without a group file: got %+v, %v; want only the primary group", u, err)
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"PATH=/bin", "HOME=/root"}, []string{"FOO=1", "PATH=/opt/bin", "FOO=2"})
	want := []string{"PATH=/opt/bin", "HOME=/root", "FOO=2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/nonexistent:" + dir}
	if p, err := LookPath("tool", env); err != nil || p != exe {
		t.Errorf("LookPath(tool): got %q, %v; want %q", p, err, exe)
	}
	if _, err := LookPath("data", env); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("non-executable in PATH: got %v, want not found", err)
	}
	if _, err := LookPath(filepath.Join(dir, "data"), env); !errors.Is(err, os.ErrPermission) {
		t.Errorf("non-executable by path: got %v, want permission", err)
	}
	if p, err := LookPath("sh", nil); err != nil || p == "" {
		t.Errorf("default PATH: got %q, %v; want sh found", p, err)
	}
}
