package ext4_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/image/ext4"
	"banger/internal/image/imagetest"
	"banger/internal/image/layers"
)

// buildImage applies the layers to a fresh tree and builds an image from it.
func buildImage(t *testing.T, tools ext4.Tools, layerTars ...[]byte) string {
	t.Helper()
	dir := t.TempDir()
	staging := filepath.Join(dir, "staging")
	if err := os.Mkdir(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	tree, err := layers.NewTree(staging, layers.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tree.Close() })
	ctx := context.Background()
	for i, l := range layerTars {
		if err := tree.ApplyLayer(ctx, bytes.NewReader(l)); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	dst := filepath.Join(dir, "root.ext4")
	if _, err := ext4.Build(ctx, tree, dst, ext4.BuildOptions{Tools: tools, Scratch: staging}); err != nil {
		t.Fatalf("Build: %v", err)
	}
	return dst
}

func stat(t *testing.T, tools ext4.Tools, image, p string) ext4.Inode {
	t.Helper()
	in, err := ext4.Stat(context.Background(), tools, image, p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return in
}

// TestBuildMetadata builds an image holding every kind of node with
// metadata an unprivileged process cannot give host files, and reads each
// back with debugfs.
func TestBuildMetadata(t *testing.T) {
	tools := imagetest.Tools(t)
	weird := []string{"sp ace", "tab\there", `qu"ote`, "back\\slash", "#hash", "-dash", "<12>", "ünï", "!bang", "semi;colon"}
	entries := []imagetest.Entry{
		{Name: "bin/", Type: tar.TypeDir},
		{Name: "bin/su", Body: "su", Mode: 0o4755},
		{Name: "bin/sg", Body: "sg", Mode: 0o2711, GID: 42},
		{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "home/u/", Type: tar.TypeDir, Mode: 0o700, UID: 1234, GID: 1234},
		{Name: "home/u/f", Body: "x", UID: 1234, GID: 1234, Mode: 0o600},
		{Name: "big-ids", Body: "x", UID: 100000, GID: 200000},
		{Name: "bin/sulink", Type: tar.TypeLink, Linkname: "bin/su"},
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/link", Type: tar.TypeSymlink, Linkname: "../bin/su", UID: 7},
		{Name: "etc/longlink", Type: tar.TypeSymlink, Linkname: strings.Repeat("a/", 100) + "x"},
		{Name: "dev/", Type: tar.TypeDir},
		{Name: "dev/sda", Type: tar.TypeBlock, Major: 8, Minor: 0, Mode: 0o660, GID: 6},
		{Name: "dev/null", Type: tar.TypeChar, Major: 1, Minor: 3, Mode: 0o666},
		{Name: "dev/big", Type: tar.TypeChar, Major: 511, Minor: 70000, Mode: 0o600},
		{Name: "dev/fifo", Type: tar.TypeFifo, Mode: 0o640},
		{Name: "dev/null2", Type: tar.TypeLink, Linkname: "dev/null"},
		{Name: "bin/ping", Body: "ping", Mode: 0o755, Xattrs: map[string]string{
			"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"user.note":           "hello",
		}},
		{Name: "sparse", Reader: bytes.NewReader(make([]byte, 8<<20)), Size: 8 << 20},
	}
	for _, w := range weird {
		entries = append(entries, imagetest.Entry{Name: "names/" + w, Body: w, UID: 5})
	}
	img := buildImage(t, tools, imagetest.Tar(t, entries...))
	imagetest.Fsck(t, tools, img)

	for _, tc := range []struct {
		path      string
		typ       string
		mode      uint32
		uid, gid  uint32
		links     int
		maj, mino uint32
	}{
		{"/", "directory", 0o755, 0, 0, 0, 0, 0},
		{"/bin/su", "regular", 0o4755, 0, 0, 2, 0, 0},
		{"/bin/sg", "regular", 0o2711, 0, 42, 1, 0, 0},
		{"/tmp", "directory", 0o1777, 0, 0, 0, 0, 0},
		{"/home/u", "directory", 0o700, 1234, 1234, 0, 0, 0},
		{"/home/u/f", "regular", 0o600, 1234, 1234, 1, 0, 0},
		{"/big-ids", "regular", 0o644, 100000, 200000, 1, 0, 0},
		{"/etc/link", "symlink", 0o777, 7, 0, 1, 0, 0},
		{"/dev/sda", "block special", 0o660, 0, 6, 1, 8, 0},
		{"/dev/null", "character special", 0o666, 0, 0, 2, 1, 3},
		{"/dev/big", "character special", 0o600, 0, 0, 1, 511, 70000},
		{"/dev/fifo", "FIFO", 0o640, 0, 0, 1, 0, 0},
	} {
		in := stat(t, tools, img, tc.path)
		if in.Type != tc.typ || in.Mode != tc.mode || in.UID != tc.uid || in.GID != tc.gid {
			t.Errorf("%s: got %s %04o %d:%d, want %s %04o %d:%d", tc.path, in.Type, in.Mode, in.UID, in.GID, tc.typ, tc.mode, tc.uid, tc.gid)
		}
		if tc.links != 0 && in.Links != tc.links {
			t.Errorf("%s: got %d links, want %d", tc.path, in.Links, tc.links)
		}
		if in.Major != tc.maj || in.Minor != tc.mino {
			t.Errorf("%s: got device %d:%d, want %d:%d", tc.path, in.Major, in.Minor, tc.maj, tc.mino)
		}
	}
	if a, b := stat(t, tools, img, "/bin/su"), stat(t, tools, img, "/bin/sulink"); a.Ino != b.Ino {
		t.Errorf("hardlink: /bin/su is inode %d, /bin/sulink %d, want the same", a.Ino, b.Ino)
	}
	if a, b := stat(t, tools, img, "/dev/null"), stat(t, tools, img, "/dev/null2"); a.Ino != b.Ino {
		t.Errorf("device hardlink: inodes %d and %d, want the same", a.Ino, b.Ino)
	}
	if got := stat(t, tools, img, "/etc/link").Target; got != "../bin/su" {
		t.Errorf("symlink target: got %q, want %q", got, "../bin/su")
	}
	ping := stat(t, tools, img, "/bin/ping")
	if ping.Xattrs["security.capability"] != "01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00" || ping.Xattrs["user.note"] != "hello" {
		t.Errorf("xattrs of /bin/ping: got %v, want security.capability and user.note=hello", ping.Xattrs)
	}
	ctx := context.Background()
	long, err := ext4.ReadFile(ctx, tools, img, "/names/sp ace", 100)
	if err != nil || string(long) != "sp ace" {
		t.Errorf("ReadFile: got %q, %v", long, err)
	}
	for _, w := range weird {
		in := stat(t, tools, img, "/names/"+w)
		if in.UID != 5 || in.Size != int64(len(w)) {
			t.Errorf("name %q: got uid %d size %d, want 5 and %d", w, in.UID, in.Size, len(w))
		}
	}
	if in := stat(t, tools, img, "/sparse"); in.Size != 8<<20 {
		t.Errorf("sparse file: got size %d, want %d", in.Size, 8<<20)
	}
	if _, err := ext4.Stat(ctx, tools, img, "/nope"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a missing path: got %v, want os.ErrNotExist", err)
	}
}

func TestCheckFindsCorruption(t *testing.T) {
	tools := imagetest.Tools(t)
	img := buildImage(t, tools, imagetest.Tar(t, imagetest.Entry{Name: "f", Body: "x"}))
	ctx := context.Background()
	if err := ext4.Check(ctx, tools, img); err != nil {
		t.Fatalf("Check of a fresh image: %v", err)
	}
	// A wrong link count is the kind of damage a bad debugfs script does.
	if out, err := exec.Command(tools.Debugfs, "-w", "-R", "set_inode_field /f links_count 5", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	if err := ext4.Check(ctx, tools, img); !errors.Is(err, ext4.ErrCorrupt) {
		t.Errorf("Check of a damaged image: got %v, want ErrCorrupt", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("junk"), 1<<14), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ext4.Check(ctx, tools, junk); !errors.Is(err, ext4.ErrNotExt4) {
		t.Errorf("Check of junk: got %v, want ErrNotExt4", err)
	}
	if ok, err := ext4.IsExt4(junk); ok || err != nil {
		t.Errorf("IsExt4(junk): got %v, %v, want false", ok, err)
	}
	if ok, err := ext4.IsExt4(img); !ok || err != nil {
		t.Errorf("IsExt4(image): got %v, %v, want true", ok, err)
	}
}

// TestSizeHeadroom checks that a built image has at least the configured
// free space and spare inodes.
func TestSizeHeadroom(t *testing.T) {
	tools := imagetest.Tools(t)
	var entries []imagetest.Entry
	for i := range 200 {
		entries = append(entries, imagetest.Entry{Name: fmt.Sprintf("d%d/f", i), Body: strings.Repeat("x", 100<<10)})
	}
	img := buildImage(t, tools, imagetest.Tar(t, entries...))
	out, err := exec.Command(tools.Debugfs, "-R", "stats", img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs stats: %v\n%s", err, out)
	}
	free := field(t, string(out), "Free blocks:") * 4096
	inodes := field(t, string(out), "Free inodes:")
	if free < ext4.DefaultMinHeadroom {
		t.Errorf("free space: got %d MiB, want at least %d MiB", free>>20, ext4.DefaultMinHeadroom>>20)
	}
	if inodes < ext4.DefaultMinInodes {
		t.Errorf("free inodes: got %d, want at least %d", inodes, ext4.DefaultMinInodes)
	}
}

func field(t *testing.T, text, name string) int64 {
	t.Helper()
	i := strings.Index(text, name)
	if i < 0 {
		t.Fatalf("no %q in:\n%s", name, text)
	}
	var v int64
	if _, err := fmt.Sscan(text[i+len(name):], &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

func TestInjectRefusesADirectoryInTheWay(t *testing.T) {
	tools := imagetest.Tools(t)
	img := buildImage(t, tools, imagetest.Tar(t, imagetest.Entry{Name: "sbin/banger-agent/", Type: tar.TypeDir}))
	err := ext4.Inject(context.Background(), tools, img, t.TempDir(), []ext4.File{{Path: "/sbin/banger-agent", Mode: 0o755, Data: []byte("x")}})
	if err == nil || !strings.Contains(err.Error(), "directory is in the way") {
		t.Errorf("Inject over a directory: got %v, want a refusal", err)
	}
	for _, f := range []ext4.File{
		{Path: "relative", Data: []byte("x")},
		{Path: "/a/../b", Data: []byte("x")},
		{Path: "/new\nline", Data: []byte("x")},
		{Path: "/dev/x", Mode: os.ModeDevice},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("Validate(%q): accepted, want refused", f.Path)
		}
	}
}
