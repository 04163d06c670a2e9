package server_test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/agent/server"
)

type entry struct {
	hdr  tar.Header
	body []byte
}

func buildTar(t *testing.T, entries []entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("tar body %s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestCopyLargeFileBothWays(t *testing.T) {
	c := newAgent(t, server.Config{})
	big := make([]byte, 40<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(big)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	archive := buildTar(t, []entry{
		{hdr: tar.Header{Name: "tree/", Typeflag: tar.TypeDir, Mode: 0o750}},
		{hdr: tar.Header{Name: "tree/big.bin", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: mtime}, body: big},
		{hdr: tar.Header{Name: "tree/sub/small.txt", Typeflag: tar.TypeReg}, body: []byte("small\n")},
		{hdr: tar.Header{Name: "tree/link", Typeflag: tar.TypeSymlink, Linkname: "big.bin"}},
	})
	dest := filepath.Join(t.TempDir(), "dest", "nested")
	if err := c.CopyTo(ctxT(t), dest, "", archive); err != nil {
		t.Fatalf("CopyTo: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dest, "tree/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != want {
		t.Errorf("extracted big.bin: sha256 differs from the original")
	}
	st, err := os.Stat(filepath.Join(dest, "tree/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || !st.ModTime().Equal(mtime) {
		t.Errorf("big.bin: got mode %v mtime %v, want 0600 and %v", st.Mode().Perm(), st.ModTime(), mtime)
	}
	if l, err := os.Readlink(filepath.Join(dest, "tree/link")); err != nil || l != "big.bin" {
		t.Errorf("link: got %q, %v; want big.bin", l, err)
	}

	var out bytes.Buffer
	if err := c.CopyFrom(ctxT(t), filepath.Join(dest, "tree"), &out); err != nil {
		t.Fatalf("CopyFrom: %v", err)
	}
	seen := map[string]bool{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read returned archive: %v", err)
		}
		seen[h.Name] = true
		if h.Name == "tree/big.bin" {
			hs := sha256.New()
			if _, err := io.Copy(hs, tr); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(hs.Sum(nil), want[:]) {
				t.Errorf("returned big.bin: sha256 differs from the original")
			}
		}
		if h.Name == "tree/link" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "big.bin") {
			t.Errorf("returned link: got type %c target %q, want a symlink to big.bin", h.Typeflag, h.Linkname)
		}
	}
	for _, name := range []string{"tree/", "tree/big.bin", "tree/sub/", "tree/sub/small.txt", "tree/link"} {
		if !seen[name] {
			t.Errorf("returned archive lacks %q (has %v)", name, seen)
		}
	}
}

func TestCopyFromRefusals(t *testing.T) {
	c := newAgent(t, server.Config{})
	tests := []struct {
		path string
		want error
	}{
		{"relative/path", proto.ErrBadRequest},
		{"/tmp/../etc", proto.ErrBadRequest},
		{"/", proto.ErrBadRequest},
		{"/no/such/file", proto.ErrNotFound},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := c.CopyFrom(ctxT(t), tt.path, &out); !errors.Is(err, tt.want) {
			t.Errorf("CopyFrom(%q): got %v, want %v", tt.path, err, tt.want)
		}
		mustHealthy(t, c)
	}
}

// TestPutRefusesEscapes feeds archives that try to write outside the destination.
// Each must be refused with a permission error, leave the outside untouched, and
// leave the agent serving.
func TestPutRefusesEscapes(t *testing.T) {
	c := newAgent(t, server.Config{})
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := func(name string) entry {
		return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: []byte("pwned")}
	}
	tests := []struct {
		name    string
		entries []entry
	}{
		{"dot-dot", []entry{reg("../outside/victim")}},
		{"absolute", []entry{reg(victim)}},
		{"absolute symlink dir", []entry{
			{hdr: tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside}},
			reg("esc/victim"),
		}},
		{"relative symlink dir", []entry{
			{hdr: tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../outside"}},
			reg("up/victim"),
		}},
		{"hard link out", []entry{
			{hdr: tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../outside/victim"}},
		}},
		{"hard link through symlink", []entry{
			{hdr: tar.Header{Name: "up2", Typeflag: tar.TypeSymlink, Linkname: "../outside"}},
			{hdr: tar.Header{Name: "hl2", Typeflag: tar.TypeLink, Linkname: "up2/victim"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(base, "dest")
			err := c.CopyTo(ctxT(t), dest, "", buildTar(t, tt.entries))
			if !errors.Is(err, proto.ErrPermission) {
				t.Errorf("CopyTo: got %v, want a permission error", err)
			}
			if b, _ := os.ReadFile(victim); string(b) != "original" {
				t.Errorf("file outside the destination: got %q, want it untouched", b)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 1 {
				t.Errorf("outside directory: got %d entries, want only the victim", len(entries))
			}
			mustHealthy(t, c)
		})
	}
}

func TestPutAsUser(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nbuilder:x:4321:4322::/home/builder:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newAgent(t, server.Config{Users: usersDB(passwd)})
	dest := filepath.Join(dir, "dest")
	archive := buildTar(t, []entry{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Uid: 7, Gid: 8}, body: []byte("x")}})
	if err := c.CopyTo(ctxT(t), dest, "builder", archive); err != nil {
		t.Fatalf("CopyTo as builder: %v", err)
	}
	uid, gid := ownerOf(t, filepath.Join(dest, "f"))
	if uid != 4321 || gid != 4322 {
		t.Errorf("owner: got %d:%d, want 4321:4322", uid, gid)
	}
	archive = buildTar(t, []entry{{hdr: tar.Header{Name: "g", Typeflag: tar.TypeReg, Uid: 7, Gid: 8}, body: []byte("x")}})
	if err := c.CopyTo(ctxT(t), dest, "", archive); err != nil {
		t.Fatalf("CopyTo keeping owners: %v", err)
	}
	if uid, gid := ownerOf(t, filepath.Join(dest, "g")); uid != 7 || gid != 8 {
		t.Errorf("owner from archive: got %d:%d, want 7:8", uid, gid)
	}
	if err := c.CopyTo(ctxT(t), dest, "nobody-here", buildTar(t, nil)); !errors.Is(err, proto.ErrNotFound) {
		t.Errorf("CopyTo as unknown user: got %v, want not found", err)
	}
}
