package privileged

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInstallMetadataRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.json")
	want := InstallMetadata{OwnerUID: 1000, OwnerGID: 1001, Version: "v1.2.3", Root: "/var/lib/banger", Created: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	if err := WriteInstallMetadata(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadInstallMetadata(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(want.Created) {
		t.Errorf("got created %v, want %v", got.Created, want.Created)
	}
	got.Created = want.Created
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("got mode %o, want 644", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	for _, key := range []string{`"owner_uid": 1000`, `"owner_gid": 1001`, `"version"`, `"root"`, `"created"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("install.json %s lacks %s", data, key)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("got %d files next to install.json, want no temporary left", len(entries))
	}
}

func TestReadInstallMetadataErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "none.json"), "banger system install"},
		{"no owner", write("no-owner.json", `{"version":"x"}`), "no owner_uid"},
		{"negative owner", write("neg.json", `{"owner_uid":-5,"owner_gid":0}`), "no owner_uid"},
		{"not JSON", write("bad.json", `owner_uid = 1`), "rewrite it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadInstallMetadata(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := ReadInstallMetadata(filepath.Join(dir, "none.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want it to wrap fs.ErrNotExist", err)
	}
	if err := WriteInstallMetadata(filepath.Join(dir, "x.json"), InstallMetadata{OwnerUID: -1}); err == nil {
		t.Errorf("writing metadata without an owner succeeded, want a refusal")
	}
}
