package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"banger/internal/initramfs/guestinit"
)

// fakeModules writes a /lib/modules/VERSION tree: modules.dep as depmod
// writes it (each module's full dependency list), modules.builtin, a softdep
// through an alias, and module files, some compressed.
func fakeModules(t *testing.T) (dir, version string) {
	t.Helper()
	dir, version = t.TempDir(), "6.9.0-test"
	root := filepath.Join(dir, version)
	dep := `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko.gz:
kernel/net/vmw_vsock/vsock.ko:
`
	files := map[string]string{
		"modules.dep":     dep,
		"modules.builtin": "kernel/fs/overlayfs/overlay.ko\n",
		"modules.softdep": "# comment\nsoftdep ext4 pre: crypto-crc32c post: nothing\nsoftdep virtio_blk pre: absent-soft\n",
		"modules.alias":   "alias crypto-crc32c crc32c_generic\nalias pci:v00001AF4d* virtio_pci\n",
	}
	for name, body := range files {
		writeTestFile(t, filepath.Join(root, name), []byte(body))
	}
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		rel, _, _ := strings.Cut(line, ":")
		body := []byte("\x7fELF module " + moduleName(rel))
		switch {
		case strings.HasSuffix(rel, ".xz"):
			var b bytes.Buffer
			w, _ := xz.NewWriter(&b)
			w.Write(body)
			w.Close()
			body = b.Bytes()
		case strings.HasSuffix(rel, ".zst"):
			var b bytes.Buffer
			w, _ := zstd.NewWriter(&b)
			w.Write(body)
			w.Close()
			body = b.Bytes()
		case strings.HasSuffix(rel, ".gz"):
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(body)
			w.Close()
			body = b.Bytes()
		}
		writeTestFile(t, filepath.Join(root, rel), body)
	}
	return dir, version
}

func writeTestFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	dir, version := fakeModules(t)
	db, err := loadModuleDB(dir, version)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      []string
		order   []string
		builtin []string
		err     string
	}{
		{"dependencies first", []string{"virtio_blk"}, []string{"virtio_ring", "virtio", "virtio_blk"}, nil, ""},
		{"dashes are underscores", []string{"virtio-blk"}, []string{"virtio_ring", "virtio", "virtio_blk"}, nil, ""},
		{"softdep through an alias, before the module", []string{"ext4"}, []string{"crc32c_generic", "crc16", "mbcache", "jbd2", "ext4"}, nil, ""},
		{"built in needs no file", []string{"overlay", "vsock"}, []string{"vsock"}, []string{"overlay"}, ""},
		{"shared dependencies once", []string{"virtio", "virtio_blk", "virtio_ring"}, []string{"virtio_ring", "virtio", "virtio_blk"}, nil, ""},
		{"unknown module", []string{"virtio_gpu"}, nil, nil, "module virtio_gpu is not in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := db.resolve(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want an error saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.order, tt.order) || !slices.Equal(r.builtin, tt.builtin) {
				t.Errorf("got order %v builtin %v, want %v %v", r.order, r.builtin, tt.order, tt.builtin)
			}
		})
	}
}

func TestResolveCycleAndMissingDep(t *testing.T) {
	dir, version := t.TempDir(), "x"
	writeTestFile(t, filepath.Join(dir, version, "modules.dep"), []byte("a.ko: b.ko\nb.ko: a.ko\nc.ko: gone.ko\n"))
	db, err := loadModuleDB(dir, version)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.resolve([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: got %v", err)
	}
	if _, err := db.resolve([]string{"c"}); err == nil || !strings.Contains(err.Error(), "gone (needed by c)") {
		t.Errorf("missing dependency: got %v", err)
	}
	if _, err := loadModuleDB(dir, "absent"); err == nil || !strings.Contains(err.Error(), "depmod") {
		t.Errorf("no modules.dep: got %v, want a hint to run depmod", err)
	}
}

func TestBuildDecompressesModules(t *testing.T) {
	dir, version := fakeModules(t)
	initBin := buildInit(t)
	res, err := Build(context.Background(), Options{KernelVersion: version, ModulesDir: dir, Modules: []string{"virtio_blk", "ext4", "overlay"}, InitBinary: initBin, OutputDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	got := listArchive(t, res.Path)
	list := string(got[strings.TrimPrefix(guestinit.ModulesList, "/")].data)
	want := ""
	for _, m := range []string{"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/block/virtio_blk.ko",
		"kernel/crypto/crc32c_generic.ko", "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko"} {
		p := "lib/modules/" + version + "/" + m
		want += "/" + p + "\n"
		e, ok := got[p]
		if !ok {
			t.Errorf("%s missing from the archive", p)
			continue
		}
		if string(e.data) != "\x7fELF module "+moduleName(m) {
			t.Errorf("%s holds %q, want the decompressed module", p, e.data)
		}
	}
	if list != want {
		t.Errorf("load list:\n%s\nwant:\n%s", list, want)
	}
	if !slices.Equal(res.Builtin, []string{"overlay"}) {
		t.Errorf("builtin %v, want [overlay]", res.Builtin)
	}
}

func TestBuildErrors(t *testing.T) {
	dir, version := fakeModules(t)
	initBin := buildInit(t)
	text := filepath.Join(t.TempDir(), "init.sh")
	writeTestFile(t, text, []byte("#!/bin/sh\n"))
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no version", Options{InitBinary: initBin}, "kernel version"},
		{"version with a slash", Options{KernelVersion: "../x", InitBinary: initBin}, "kernel version"},
		{"no init", Options{KernelVersion: version}, "no init binary"},
		{"init not ELF", Options{KernelVersion: version, InitBinary: text}, "not an ELF executable"},
		{"unknown module", Options{KernelVersion: version, InitBinary: initBin, Modules: []string{"nope"}}, "module nope is not in"},
		{"no modules for the kernel", Options{KernelVersion: "7.0", InitBinary: initBin}, "run depmod 7.0"},
	}
	if ls, err := os.ReadFile("/bin/ls"); err == nil && bytes.Contains(ls, []byte("ld-linux")) {
		tests = append(tests, struct {
			name string
			opts Options
			want string
		}{"dynamic init", Options{KernelVersion: version, InitBinary: "/bin/ls"}, "dynamically linked: build it with CGO_ENABLED=0"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			tt.opts.ModulesDir, tt.opts.OutputDir = dir, out
			_, err := Build(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error saying %q", err, tt.want)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("output dir holds %d files after a failed build", len(ents))
			}
		})
	}
}

func TestCpioRoundTrip(t *testing.T) {
	var b bytes.Buffer
	cw := &cpioWriter{w: &b}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cw.Dir("dev", 0o755))
	must(cw.CharDev("dev/console", 0o600, 5, 1))
	for _, n := range []int{0, 1, 2, 3, 4, 5} { // every padding case
		data := strings.Repeat("x", n)
		must(cw.File("f"+strings.Repeat("n", n), 0o644, int64(n), strings.NewReader(data)))
	}
	must(cw.Close())
	if b.Len()%4 != 0 {
		t.Errorf("archive is %d bytes, want a multiple of 4", b.Len())
	}
	var names []string
	err := ReadArchive(bytes.NewReader(append(b.Bytes(), make([]byte, 512)...)), func(e Entry, r io.Reader) error {
		data, _ := io.ReadAll(r)
		if e.IsRegular() && len(data) != len(e.Name)-1 {
			t.Errorf("%s: %d bytes, want %d", e.Name, len(data), len(e.Name)-1)
		}
		names = append(names, e.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dev", "dev/console", "f", "fn", "fnn", "fnnn", "fnnnn", "fnnnnn"}; !slices.Equal(names, want) {
		t.Errorf("entries %v, want %v", names, want)
	}
	if err := cw.File("short", 0o644, 10, strings.NewReader("abc")); err == nil {
		t.Errorf("a file shorter than its size was accepted")
	}
}
