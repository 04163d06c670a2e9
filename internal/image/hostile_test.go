package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/image/layers"
)

// snapshot records everything about a host tree that a write could change:
// each path's type, mode, size, content digest and link target.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v %d", p, fi.Mode(), fi.Size())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// hugeHeader is a tar stream whose only entry claims a size far over the
// limit and has no body: the size must be refused before anything is read.
func hugeHeader(t *testing.T, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: size, Mode: 0o644, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	return append(buf.Bytes(), make([]byte, 4096)...) // a little body, then the stream just ends
}

// TestHostileArchives imports archives that try to escape, to plant things
// on the host, or to exhaust its disk. Each is refused or neutralised (the
// entry lands inside the image), and the host tree next to the work area,
// including the files the archives aim at, is unchanged afterwards.
func TestHostileArchives(t *testing.T) {
	b, tools := newBuilder(t)
	top := t.TempDir()
	sentinel := filepath.Join(top, "sentinel")
	if err := os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(sentinel, "etc", "passwd")
	writeFile(t, victim, "original\n")
	if err := os.Symlink(victim, filepath.Join(sentinel, "link-to-victim")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, sentinel)

	type check func(t *testing.T, img string)
	inImage := func(p, content string) check {
		return func(t *testing.T, img string) {
			t.Helper()
			if got := readFile(t, tools, img, p); got != content {
				t.Errorf("%s in the image: got %q, want %q", p, got, content)
			}
		}
	}
	zeros := func(n int64) io.Reader { return io.LimitReader(zeroReader{}, n) }

	for _, tc := range []struct {
		name    string
		entries []imagetest.Entry
		raw     []byte        // a hand-made stream instead of entries
		limits  layers.Limits // for the disk-filling cases
		refuse  error         // nil: neutralised, and check runs on the image
		check   check
	}{
		{name: "dot-dot path", entries: []imagetest.Entry{
			{Name: "../../../../" + strings.TrimPrefix(victim, "/"), Body: "pwned"},
		}, check: inImage(victim, "pwned")},
		{name: "absolute path", entries: []imagetest.Entry{
			{Name: victim, Body: "pwned"},
		}, check: inImage(victim, "pwned")},
		{name: "write through an absolute symlink", entries: []imagetest.Entry{
			{Name: "esc", Type: tar.TypeSymlink, Linkname: filepath.Dir(victim)},
			{Name: "esc/passwd", Body: "pwned"},
		}, check: inImage(victim, "pwned")},
		{name: "write through an escaping relative symlink", entries: []imagetest.Entry{
			{Name: "a/b/up", Type: tar.TypeSymlink, Linkname: "../../../../../../../../.."},
			{Name: "a/b/up" + filepath.Dir(victim) + "/passwd", Body: "pwned"},
		}, check: inImage(victim, "pwned")},
		{name: "write through a symlink to a host file", entries: []imagetest.Entry{
			{Name: "etc/", Type: tar.TypeDir},
			{Name: "etc/passwd", Type: tar.TypeSymlink, Linkname: victim},
			{Name: "etc/passwd", Body: "replaced the link, not its target"},
		}, check: inImage("/etc/passwd", "replaced the link, not its target")},
		{name: "hardlink to a host file", entries: []imagetest.Entry{
			{Name: "hl", Type: tar.TypeLink, Linkname: victim},
		}, refuse: image.ErrUnsafe},
		{name: "hardlink out through dot-dot", entries: []imagetest.Entry{
			{Name: "hl", Type: tar.TypeLink, Linkname: "../../../../../../etc/shadow"},
		}, refuse: image.ErrUnsafe},
		{name: "hardlink through a symlink to the host", entries: []imagetest.Entry{
			{Name: "s", Type: tar.TypeSymlink, Linkname: sentinel},
			{Name: "hl", Type: tar.TypeLink, Linkname: "s/etc/passwd"},
		}, refuse: image.ErrUnsafe},
		{name: "hardlink to a directory", entries: []imagetest.Entry{
			{Name: "d/", Type: tar.TypeDir},
			{Name: "hl", Type: tar.TypeLink, Linkname: "d"},
		}, refuse: image.ErrUnsafe},
		{name: "device node for a host disk", entries: []imagetest.Entry{
			{Name: "sda", Type: tar.TypeBlock, Major: 8, Minor: 0, Mode: 0o666},
			{Name: "mem", Type: tar.TypeChar, Major: 1, Minor: 1, Mode: 0o666},
		}, check: func(t *testing.T, img string) {
			if in := stat(t, tools, img, "/sda"); in.Type != "block special" || in.Major != 8 {
				t.Errorf("/sda: got %s %d:%d, want the block device inside the image", in.Type, in.Major, in.Minor)
			}
		}},
		{name: "setuid root shell", entries: []imagetest.Entry{
			{Name: "rootshell", Body: "#!/bin/sh", Mode: 0o4777},
		}, check: func(t *testing.T, img string) {
			if in := stat(t, tools, img, "/rootshell"); in.Mode != 0o4777 {
				t.Errorf("/rootshell: got mode %04o, want 4777 inside the image", in.Mode)
			}
		}},
		{name: "huge file", raw: hugeHeader(t, 1<<40), refuse: image.ErrTooLarge},
		{name: "content over the data limit", limits: layers.Limits{MaxDataBytes: 1 << 20}, entries: []imagetest.Entry{
			{Name: "big", Reader: randReader(4 << 20), Size: 4 << 20},
		}, refuse: image.ErrTooLarge},
		{name: "zeros are stored as holes", limits: layers.Limits{MaxDataBytes: 1 << 20}, entries: []imagetest.Entry{
			{Name: "sparse", Reader: zeros(64 << 20), Size: 64 << 20},
		}, check: func(t *testing.T, img string) {
			if in := stat(t, tools, img, "/sparse"); in.Size != 64<<20 || in.Blocks != 0 {
				t.Errorf("/sparse: got size %d with %d blocks, want %d with none", in.Size, in.Blocks, 64<<20)
			}
		}},
		{name: "too many files", limits: layers.Limits{MaxNodes: 10}, entries: manyFiles(20), refuse: image.ErrTooLarge},
		{name: "duplicate entries", entries: []imagetest.Entry{
			{Name: "dup", Body: "first"},
			{Name: "dup", Body: "second"},
			{Name: "d/x", Body: "in a directory"},
			{Name: "d", Body: "a file replacing the directory"},
		}, check: func(t *testing.T, img string) {
			inImage("/dup", "second")(t, img)
			inImage("/d", "a file replacing the directory")(t, img)
		}},
		{name: "newline in a name", entries: []imagetest.Entry{
			{Name: "evil\n!touch /tmp/pwned", Body: "x"},
		}, refuse: image.ErrUnsafe},
		{name: "carriage return in a name", entries: []imagetest.Entry{
			{Name: "evil\rname", Body: "x"},
		}, refuse: image.ErrUnsafe},
		{name: "newline in a symlink target", entries: []imagetest.Entry{
			{Name: "l", Type: tar.TypeSymlink, Linkname: "x\n!touch /tmp/pwned"},
		}, refuse: image.ErrUnsafe},
		{name: "symlink loop", entries: []imagetest.Entry{
			{Name: "a", Type: tar.TypeSymlink, Linkname: "b"},
			{Name: "b", Type: tar.TypeSymlink, Linkname: "a"},
			{Name: "a/x", Body: "x"},
		}, refuse: image.ErrUnsafe},
		{name: "a file under a file", entries: []imagetest.Entry{
			{Name: "f", Body: "x"},
			{Name: "f/x", Body: "x"},
		}, refuse: image.ErrUnsafe},
		{name: "name too long", entries: []imagetest.Entry{
			{Name: strings.Repeat("n", 256), Body: "x"},
		}, refuse: image.ErrUnsafe},
		{name: "device number out of range", entries: []imagetest.Entry{
			{Name: "d", Type: tar.TypeChar, Major: 5000, Minor: 1},
		}, refuse: image.ErrUnsafe},
		{name: "whiteouts aimed outside", entries: []imagetest.Entry{
			{Name: "../../.wh.sentinel"},
			{Name: "../.wh..wh..opq"},
			{Name: "kept", Body: "x"},
		}, check: inImage("/kept", "x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bb := b
			if tc.limits != (layers.Limits{}) {
				var err error
				if bb, err = image.New(image.Config{Tools: tools, Limits: tc.limits}); err != nil {
					t.Fatal(err)
				}
			}
			in := filepath.Join(top, "in.tar")
			raw := tc.raw
			if raw == nil {
				raw = imagetest.Tar(t, tc.entries...)
			}
			if err := os.WriteFile(in, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			keep := []string{"img.ext4"}
			if tc.refuse != nil {
				keep = nil
			}
			out := outDir(t, keep...)
			dst := filepath.Join(out, "img.ext4")
			_, err := bb.Import(context.Background(), in, dst, image.Options{})
			switch {
			case tc.refuse != nil && !errors.Is(err, tc.refuse):
				t.Errorf("Import: got %v, want %v", err, tc.refuse)
			case tc.refuse == nil && err != nil:
				t.Errorf("Import: %v, want it neutralised", err)
			case tc.refuse == nil:
				imagetest.Fsck(t, tools, dst)
				tc.check(t, dst)
			default:
				t.Logf("refused: %v", err)
			}
			if after := snapshot(t, sentinel); after != before {
				t.Errorf("the host tree changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			assertNoSpecialFiles(t, top)
		})
	}
	if _, err := os.Lstat("/tmp/pwned"); err == nil {
		t.Error("/tmp/pwned exists: a name ran as a debugfs shell escape")
	}
}

// assertNoSpecialFiles fails if anything under root is a device, a fifo or
// a setuid or setgid file: the host never gets what an image describes.
func assertNoSpecialFiles(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSetuid|fs.ModeSetgid) != 0 {
			t.Errorf("%s on the host has mode %v", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// randReader returns n bytes of incompressible, non-zero data.
func randReader(n int64) io.Reader {
	return io.LimitReader(&patternReader{}, n)
}

// patternReader yields a cheap xorshift sequence: non-zero and varied
// enough that no block is all zeros.
type patternReader struct{ x uint64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.x == 0 {
		r.x = 0x9E3779B97F4A7C15
	}
	for i := range p {
		r.x ^= r.x << 13
		r.x ^= r.x >> 7
		r.x ^= r.x << 17
		p[i] = byte(r.x) | 1
	}
	return len(p), nil
}

func manyFiles(n int) []imagetest.Entry {
	var out []imagetest.Entry
	for i := range n {
		out = append(out, imagetest.Entry{Name: fmt.Sprintf("f%d", i), Body: "x"})
	}
	return out
}
