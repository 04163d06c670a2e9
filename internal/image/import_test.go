package image_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"banger/internal/image"
	"banger/internal/image/ext4"
	"banger/internal/image/imagetest"
)

func fileDigest(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func rootfsEntries() []imagetest.Entry {
	return []imagetest.Entry{
		{Name: "./", Type: tar.TypeDir, Mode: 0o755},
		{Name: "./bin/", Type: tar.TypeDir},
		{Name: "./bin/sh", Body: "#!sh", Mode: 0o755},
		{Name: "./bin/mount", Body: "mount", Mode: 0o4755},
		{Name: "./sbin", Type: tar.TypeSymlink, Linkname: "bin"},
		{Name: "./etc/hostname", Body: "box\n", UID: 1234},
		{Name: "./dev/console", Type: tar.TypeChar, Major: 5, Minor: 1, Mode: 0o600},
	}
}

func TestImportTarballs(t *testing.T) {
	b, tools := newBuilder(t)
	plain := imagetest.Tar(t, rootfsEntries()...)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	if _, err := gw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	zw, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	in := t.TempDir()
	out := outDir(t, "tar.ext4", "tar.gz.ext4", "tar.zst.ext4")
	for name, data := range map[string][]byte{"tar": plain, "tar.gz": gz.Bytes(), "tar.zst": zs.Bytes()} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(in, "rootfs."+name)
			if err := os.WriteFile(src, data, 0o644); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(out, name+".ext4")
			res, err := b.Import(context.Background(), src, dst, image.Options{Inject: agentFiles})
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if want := fileDigest(t, src); res.ID != want || res.Kind != image.KindRootfsTar {
				t.Errorf("got id %s kind %s, want %s rootfs-tar", res.ID, res.Kind, want)
			}
			r, err := b.ResolveImport(context.Background(), src)
			if err != nil || r.ID != res.ID {
				t.Errorf("ResolveImport: got %v, %v, want id %s", r.ID, err, res.ID)
			}
			imagetest.Fsck(t, tools, dst)
			checkRootfs(t, tools, dst)
		})
	}
}

// checkRootfs checks an image made from rootfsEntries with agentFiles.
func checkRootfs(t *testing.T, tools ext4.Tools, img string) {
	t.Helper()
	if in := stat(t, tools, img, "/bin/mount"); in.Mode != 0o4755 {
		t.Errorf("/bin/mount: got mode %04o, want 4755", in.Mode)
	}
	if in := stat(t, tools, img, "/etc/hostname"); in.UID != 1234 {
		t.Errorf("/etc/hostname: got uid %d, want 1234", in.UID)
	}
	if in := stat(t, tools, img, "/dev/console"); in.Type != "character special" || in.Major != 5 || in.Minor != 1 {
		t.Errorf("/dev/console: got %s %d:%d", in.Type, in.Major, in.Minor)
	}
	// /sbin is a symlink to bin: the agent lands in /bin, through it.
	if got := readFile(t, tools, img, "/bin/banger-agent"); got != "#!agent v2\n" {
		t.Errorf("agent through the /sbin symlink: got %q", got)
	}
}

func TestImportDirectory(t *testing.T) {
	b, tools := newBuilder(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "home/u"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "bin/tool"), "tool")
	if err := os.Chmod(filepath.Join(root, "bin/tool"), os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "bin/tool"), filepath.Join(root, "bin/tool2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../bin/tool", filepath.Join(root, "etc/link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "etc/fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "home/u/f"), "f")
	if err := unix.Lsetxattr(filepath.Join(root, "home/u/f"), "user.test", []byte("v"), 0); err != nil {
		t.Logf("no user xattrs here: %v", err)
	}
	wantUID := uint32(os.Getuid())
	if os.Getuid() == 0 {
		wantUID = 1234
		if err := os.Lchown(filepath.Join(root, "home/u/f"), 1234, 1234); err != nil {
			t.Fatal(err)
		}
	}
	out := outDir(t, "dir.ext4")
	dst := filepath.Join(out, "dir.ext4")
	ctx := context.Background()
	r1, err := b.ResolveImport(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Import(ctx, root, dst, image.Options{})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if res.ID != r1.ID || res.Kind != image.KindRootfsDir {
		t.Errorf("Import id %s kind %s, ResolveImport id %s: want the same, rootfs-dir", res.ID, res.Kind, r1.ID)
	}
	imagetest.Fsck(t, tools, dst)
	tool, tool2 := stat(t, tools, dst, "/bin/tool"), stat(t, tools, dst, "/bin/tool2")
	if tool.Mode != 0o4755 || tool.Ino != tool2.Ino || tool.Links != 2 {
		t.Errorf("/bin/tool: got mode %04o inode %d/%d links %d, want 4755, one inode, 2 links", tool.Mode, tool.Ino, tool2.Ino, tool.Links)
	}
	if in := stat(t, tools, dst, "/etc/link"); in.Target != "../bin/tool" {
		t.Errorf("/etc/link: got target %q", in.Target)
	}
	if in := stat(t, tools, dst, "/etc/fifo"); in.Type != "FIFO" || in.Mode != 0o640 {
		t.Errorf("/etc/fifo: got %s %04o", in.Type, in.Mode)
	}
	f := stat(t, tools, dst, "/home/u/f")
	if f.UID != wantUID {
		t.Errorf("/home/u/f: got uid %d, want %d", f.UID, wantUID)
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "home/u/f"), "user.test", make([]byte, 8)); err == nil && f.Xattrs["user.test"] != "v" {
		t.Errorf("/home/u/f: got xattrs %v, want user.test=v", f.Xattrs)
	}
}

func TestImportExt4AndReinject(t *testing.T) {
	b, tools := newBuilder(t)
	ctx := context.Background()
	in := t.TempDir()
	src := filepath.Join(in, "rootfs.tar")
	if err := os.WriteFile(src, imagetest.Tar(t, rootfsEntries()...), 0o644); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(in, "base.ext4")
	if _, err := b.Import(ctx, src, base, image.Options{}); err != nil {
		t.Fatal(err)
	}
	baseDigest := fileDigest(t, base)

	out := outDir(t, "imported.ext4", "v3.ext4")
	imported := filepath.Join(out, "imported.ext4")
	res, err := b.Import(ctx, base, imported, image.Options{Inject: agentFiles})
	if err != nil {
		t.Fatalf("Import of an ext4 file: %v", err)
	}
	if res.ID != baseDigest || res.Kind != image.KindExt4 {
		t.Errorf("got id %s kind %s, want %s ext4", res.ID, res.Kind, baseDigest)
	}
	imagetest.Fsck(t, tools, imported)
	checkRootfs(t, tools, imported)
	if fileDigest(t, base) != baseDigest {
		t.Error("Import changed its source")
	}

	// A newer agent goes into a copy; the image it came from is untouched.
	before := fileDigest(t, imported)
	v3 := []image.InjectFile{
		{Path: "/sbin/banger-agent", Mode: 0o755, Data: []byte("#!agent v3\n")},
		{Path: "/etc/banger/agent-version", Mode: 0o644, Data: []byte("3\n")},
		{Path: "/opt/banger/hooks/init", Mode: 0o700, UID: 7, Data: []byte("hook")},
		{Path: "/init", Mode: os.ModeSymlink | 0o777, Target: "/sbin/banger-agent"},
	}
	newer := filepath.Join(out, "v3.ext4")
	if _, err := b.Reinject(ctx, imported, newer, v3); err != nil {
		t.Fatalf("Reinject: %v", err)
	}
	if fileDigest(t, imported) != before {
		t.Error("Reinject changed its source")
	}
	imagetest.Fsck(t, tools, newer)
	if got := readFile(t, tools, newer, "/bin/banger-agent"); got != "#!agent v3\n" {
		t.Errorf("agent after Reinject: got %q", got)
	}
	if got := readFile(t, tools, newer, "/etc/banger/agent-version"); got != "3\n" {
		t.Errorf("version after Reinject: got %q", got)
	}
	if in := stat(t, tools, newer, "/opt/banger/hooks/init"); in.Mode != 0o700 || in.UID != 7 {
		t.Errorf("/opt/banger/hooks/init: got %04o uid %d, want 0700 uid 7", in.Mode, in.UID)
	}
	if in := stat(t, tools, newer, "/opt/banger"); in.Type != "directory" || in.Mode != 0o755 {
		t.Errorf("/opt/banger: got %s %04o, want a 0755 directory", in.Type, in.Mode)
	}
	if in := stat(t, tools, newer, "/init"); in.Target != "/sbin/banger-agent" {
		t.Errorf("/init: got target %q", in.Target)
	}
	// In place: dst == src.
	if _, err := b.Reinject(ctx, newer, newer, agentFiles); err != nil {
		t.Fatalf("Reinject in place: %v", err)
	}
	if got := readFile(t, tools, newer, "/etc/banger/agent-version"); got != "2\n" {
		t.Errorf("version after Reinject in place: got %q", got)
	}
}

func TestImportNotAnImage(t *testing.T) {
	b, _ := newBuilder(t)
	in := t.TempDir()
	text := filepath.Join(in, "notes.txt")
	writeFile(t, text, "hello, this is text\n")
	junk := filepath.Join(in, "junk.bin")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(in, "empty")
	writeFile(t, emptyFile, "")
	fakeExt4 := filepath.Join(in, "fake.ext4")
	fake := make([]byte, 64<<10)
	fake[1080], fake[1081] = 0x53, 0xef // the magic, and nothing else
	if err := os.WriteFile(fakeExt4, fake, 0o644); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(in, "saved.tar")
	tag, _ := name.NewTag("example.com/x:1")
	if err := tarball.WriteToFile(saved, tag, makeImage(t, hostArch(), layer(t, imagetest.Entry{Name: "x", Body: "x"}))); err != nil {
		t.Fatal(err)
	}
	lay := filepath.Join(in, "layout")
	if _, err := layout.Write(lay, empty.Index); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, hint string
	}{
		{"text", text, "not a tar archive"},
		{"junk", junk, "not a tar archive"},
		{"empty", emptyFile, "no files"},
		{"bad ext4", fakeExt4, "fake.ext4"},
		{"docker archive", saved, "image pull docker-archive:"},
		{"OCI layout", lay, "image pull oci:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := outDir(t)
			_, err := b.Import(context.Background(), tc.path, filepath.Join(out, "x.ext4"), image.Options{})
			if !errors.Is(err, image.ErrNotImage) || !strings.Contains(err.Error(), tc.hint) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("Import %s: got %v, want ErrNotImage naming it and saying %q", tc.path, err, tc.hint)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestFullDisk fills a small tmpfs: the staging area, and then the image
// file, run out of space. The error says so, and nothing is left.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	b, tools := newBuilder(t)
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", small).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", small, err, out)
		}
	})
	src := filepath.Join(dir, "big.tar")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	imagetest.WriteTar(t, f, imagetest.Entry{Name: "big", Reader: randReader(24 << 20), Size: 24 << 20})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Staging in the small filesystem: writing the content fails.
	_, err = b.Import(context.Background(), src, filepath.Join(small, "x.ext4"), image.Options{})
	if !errors.Is(err, image.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("staging on a full disk: got %v, want ErrNoSpace", err)
	}
	t.Logf("staging on a full disk: %v", err)
	assertOnly(t, small)

	// Staging elsewhere: the image does not fit.
	elsewhere, err := image.New(image.Config{Tools: tools, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = elsewhere.Import(context.Background(), src, filepath.Join(small, "x.ext4"), image.Options{})
	if !errors.Is(err, image.ErrNoSpace) || !strings.Contains(err.Error(), small) {
		t.Errorf("image on a full disk: got %v, want ErrNoSpace naming %s", err, small)
	}
	t.Logf("image on a full disk: %v", err)
	assertOnly(t, small)
	assertOnly(t, dir, "small", "big.tar")
}
