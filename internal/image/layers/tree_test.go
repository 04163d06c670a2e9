package layers_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"banger/internal/image/imagetest"
	. "banger/internal/image/layers"
)

func newTestTree(t *testing.T, limits Limits) *Tree {
	t.Helper()
	tree, _ := newTestTreeIn(t, limits)
	return tree
}

func newTestTreeIn(t *testing.T, limits Limits) (*Tree, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "staging")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tree, err := NewTree(dir, limits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tree.Close() })
	return tree, dir
}

func apply(t *testing.T, tree *Tree, entries ...imagetest.Entry) error {
	t.Helper()
	return tree.ApplyLayer(context.Background(), bytes.NewReader(imagetest.Tar(t, entries...)))
}

// listing renders the tree as "path kind" lines, hardlinks as "path = first".
func listing(t *testing.T, tree *Tree) []string {
	t.Helper()
	var out []string
	err := tree.Walk(func(e Entry) error {
		if e.FirstPath != "" {
			out = append(out, e.Path+" = "+e.FirstPath)
			return nil
		}
		out = append(out, e.Path+" "+e.Node.Kind.String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWhiteoutsAndOpaqueDirectories(t *testing.T) {
	tree := newTestTree(t, Limits{})
	dir := func(n string) imagetest.Entry { return imagetest.Entry{Name: n, Type: tar.TypeDir} }
	file := func(n string) imagetest.Entry { return imagetest.Entry{Name: n, Body: n} }
	steps := [][]imagetest.Entry{
		{dir("a/"), file("a/keep"), file("a/gone"), dir("o/"), file("o/x"), dir("o/d/"), file("o/d/y"), dir("o2/"), dir("o2/d/"), file("o2/d/low")},
		{
			{Name: "a/.wh.gone"},
			{Name: "a/.wh.never-existed"},
			file("o/late"), // before the marker, same layer: kept
			{Name: "o/.wh..wh..opq"},
			file("o/new"),
			file("o2/d/high"), // a lower directory this layer writes into
			{Name: "o2/.wh..wh..opq"},
			{Name: ".wh..wh.plnk", Type: tar.TypeDir}, // aufs bookkeeping: ignored
		},
		{file("a/gone")}, // a whited-out name can come back
	}
	for i, s := range steps {
		if err := apply(t, tree, s...); err != nil {
			t.Fatalf("layer %d: %v", i+1, err)
		}
	}
	got := strings.Join(listing(t, tree), "\n")
	want := strings.Join([]string{
		"/ directory",
		"/a directory",
		"/a/gone regular file",
		"/a/keep regular file",
		"/o directory",
		"/o/late regular file",
		"/o/new regular file",
		"/o2 directory",
		"/o2/d directory",
		"/o2/d/high regular file",
	}, "\n")
	if got != want {
		t.Errorf("tree:\n%s\nwant:\n%s", got, want)
	}
}

func TestSymlinksResolveInsideTheImage(t *testing.T) {
	tree := newTestTree(t, Limits{})
	err := apply(t, tree,
		imagetest.Entry{Name: "usr/lib/", Type: tar.TypeDir},
		imagetest.Entry{Name: "lib", Type: tar.TypeSymlink, Linkname: "usr/lib"},
		imagetest.Entry{Name: "abs", Type: tar.TypeSymlink, Linkname: "/usr"},
		imagetest.Entry{Name: "up", Type: tar.TypeSymlink, Linkname: "../../../../"},
		imagetest.Entry{Name: "lib/a", Body: "a"},                                  // -> /usr/lib/a
		imagetest.Entry{Name: "abs/lib/b", Body: "b"},                              // -> /usr/lib/b
		imagetest.Entry{Name: "up/up/lib/c", Body: "c"},                            // -> /usr/lib/c
		imagetest.Entry{Name: "hl", Type: tar.TypeLink, Linkname: "lib/a"},         // -> the node of /usr/lib/a
		imagetest.Entry{Name: "lib", Type: tar.TypeSymlink, Linkname: "elsewhere"}, // replaces the link, not its target
	)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(listing(t, tree), "\n")
	for _, want := range []string{"/hl regular file", "/usr/lib/b regular file", "/usr/lib/c regular file", "/lib symlink", "/usr/lib/a = /hl"} {
		if !strings.Contains(got, want) {
			t.Errorf("tree:\n%s\nwant a line %q", got, want)
		}
	}
}

func TestRefusedEntriesLeaveTheTree(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry imagetest.Entry
		want  error
	}{
		{"hardlink to nothing", imagetest.Entry{Name: "x", Type: tar.TypeLink, Linkname: "missing"}, ErrUnsafe},
		{"empty symlink", imagetest.Entry{Name: "x", Type: tar.TypeSymlink}, ErrUnsafe},
		{"root as a file", imagetest.Entry{Name: ".", Body: "x"}, ErrUnsafe},
		{"bad xattr namespace", imagetest.Entry{Name: "x", Body: "x", Xattrs: map[string]string{"weird.ns": "v"}}, ErrUnsafe},
		{"huge xattrs", imagetest.Entry{Name: "x", Body: "x", Xattrs: map[string]string{"user.big": strings.Repeat("v", 5000)}}, ErrUnsafe},
		{"lost+found as a file", imagetest.Entry{Name: "lost+found", Body: "x"}, ErrUnsafe},
		{"path too long", imagetest.Entry{Name: strings.Repeat("d/", 2100) + "x", Body: "x"}, ErrUnsafe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := newTestTree(t, Limits{})
			if err := apply(t, tree, tc.entry); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	tree := newTestTree(t, Limits{})
	if err := tree.ApplyLayer(context.Background(), strings.NewReader("definitely not a tar archive, but longer than nothing at all")); !errors.Is(err, ErrNotTar) {
		t.Errorf("text: got %v, want ErrNotTar", err)
	}
}

// TestStagingHoldsOnlyPlainFiles checks the host side of a hostile layer:
// the staging area holds directories and regular files with private modes,
// owned by this process, and nothing else, before and after Materialize.
func TestStagingHoldsOnlyPlainFiles(t *testing.T) {
	tree, staging := newTestTreeIn(t, Limits{})
	err := apply(t, tree,
		imagetest.Entry{Name: "suid", Body: "x", Mode: 0o6777, UID: 0},
		imagetest.Entry{Name: "owned", Body: "x", UID: 1234, GID: 1234},
		imagetest.Entry{Name: "dev/sda", Type: tar.TypeBlock, Major: 8, Mode: 0o666},
		imagetest.Entry{Name: "fifo", Type: tar.TypeFifo},
		imagetest.Entry{Name: "hostetc", Type: tar.TypeSymlink, Linkname: "/etc"},
		imagetest.Entry{Name: "hostetc/passwd", Body: "x"},
		imagetest.Entry{Name: "hl", Type: tar.TypeLink, Linkname: "suid"},
		imagetest.Entry{Name: "open/", Type: tar.TypeDir, Mode: 0o777},
	)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var seen []string
		err := filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(staging, p)
			seen = append(seen, rel)
			m := fi.Mode()
			switch {
			case m.IsDir() && m.Perm() == 0o700 && m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == 0:
			case m.IsRegular() && m.Perm() == 0o600 && m&(fs.ModeSetuid|fs.ModeSetgid) == 0:
			default:
				t.Errorf("%s: %s has mode %v, want a 0700 directory or a 0600 file", when, rel, m)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Getuid() {
				t.Errorf("%s: %s is owned by uid %d, want this process's %d", when, rel, st.Uid, os.Getuid())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(seen)
		t.Logf("%s: %v", when, seen)
	}
	check("applied")
	root, err := tree.Materialize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check("materialized")
	if _, err := os.Lstat(filepath.Join(root, "etc", "passwd")); err != nil {
		t.Errorf("/etc/passwd (written through the symlink) not staged: %v", err)
	}
	a, err1 := os.Stat(filepath.Join(root, "suid"))
	b, err2 := os.Stat(filepath.Join(root, "hl"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("hardlink not staged as a host hardlink: %v %v", err1, err2)
	}
}

func TestLimits(t *testing.T) {
	tree := newTestTree(t, Limits{MaxFileSize: 100})
	if err := apply(t, tree, imagetest.Entry{Name: "f", Body: strings.Repeat("x", 101)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("file over MaxFileSize: got %v, want ErrTooLarge", err)
	}
	// Replaced content frees its budget (a replacement briefly needs both).
	tree = newTestTree(t, Limits{MaxDataBytes: 5 * BlockSize})
	big := strings.Repeat("x", 2*BlockSize)
	for i := range 5 {
		if err := apply(t, tree, imagetest.Entry{Name: "f", Body: big}); err != nil {
			t.Fatalf("rewrite %d of a file within the budget: %v", i, err)
		}
	}
	if err := apply(t, tree, imagetest.Entry{Name: "g", Body: big}); err != nil {
		t.Fatalf("second file within the budget: %v", err)
	}
	if err := apply(t, tree, imagetest.Entry{Name: "h", Body: big}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("third file over MaxDataBytes: got %v, want ErrTooLarge", err)
	}
	if got := tree.Stats().DataBlocks; got != 4 {
		t.Errorf("data blocks: got %d, want 4", got)
	}
}
