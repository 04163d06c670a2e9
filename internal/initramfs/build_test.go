package initramfs

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/initramfs/guestinit"
)

// hostKernel returns a kernel release on this machine that has modules.
func hostKernel(t *testing.T) string {
	t.Helper()
	ents, _ := os.ReadDir(DefaultModulesDir)
	for i := len(ents) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(DefaultModulesDir, ents[i].Name(), "modules.dep")); err == nil {
			return ents[i].Name()
		}
	}
	t.Skipf("no kernel modules under %s with a modules.dep: install a linux-image package", DefaultModulesDir)
	return ""
}

// buildInit builds cmd/banger-init statically into a temp dir.
func buildInit(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go toolchain not on PATH: needed to build banger-init")
	}
	out := filepath.Join(t.TempDir(), "banger-init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "banger/cmd/banger-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build banger-init: %v\n%s", err, b)
	}
	return out
}

type listed struct {
	entry Entry
	data  []byte
}

// listArchive reads back a gzip-compressed newc archive.
func listArchive(t *testing.T, path string) map[string]listed {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: not gzip: %v", path, err)
	}
	got := map[string]listed{}
	err = ReadArchive(zr, func(e Entry, r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if _, dup := got[e.Name]; dup {
			t.Errorf("entry %s appears twice", e.Name)
		}
		got[e.Name] = listed{e, b}
		return nil
	})
	if err != nil {
		t.Fatalf("read back %s: %v", path, err)
	}
	return got
}

func TestBuildHostKernel(t *testing.T) {
	version := hostKernel(t)
	initBin := buildInit(t)
	out := t.TempDir()
	ctx := context.Background()

	res, err := Build(ctx, Options{KernelVersion: version, InitBinary: initBin, OutputDir: out})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.Reused {
		t.Errorf("first build: Reused = true, want false")
	}
	t.Logf("initramfs %s: modules %v, built in %v", res.Path, res.Modules, res.Builtin)
	got := listArchive(t, res.Path)

	initWant, _ := os.ReadFile(initBin)
	if e, ok := got["init"]; !ok || !e.entry.IsRegular() || e.entry.Perm() != 0o755 || sha256.Sum256(e.data) != sha256.Sum256(initWant) {
		t.Errorf("/init: got %+v (in archive %v), want the banger-init binary, mode 0755", e.entry, ok)
	}
	if e := got["dev/console"]; !e.entry.IsCharDevice() || e.entry.RdevMajor != 5 || e.entry.RdevMinor != 1 {
		t.Errorf("/dev/console: got %+v, want char device 5:1", e.entry)
	}
	// Every entry's parent directory comes in the archive too.
	for name := range got {
		if d := filepath.Dir(name); d != "." {
			if p, ok := got[d]; !ok || !p.entry.IsDir() {
				t.Errorf("%s: parent %s missing or not a directory", name, d)
			}
		}
	}

	// The load-order list names exactly the module files, each an
	// uncompressed ELF, in an order where each follows its dependencies.
	list, ok := got[strings.TrimPrefix(guestinit.ModulesList, "/")]
	if !ok {
		t.Fatalf("no %s in the archive", guestinit.ModulesList)
	}
	var order []string
	for _, p := range strings.Fields(string(list.data)) {
		e, ok := got[strings.TrimPrefix(p, "/")]
		if !ok {
			t.Errorf("load list names %s, which is not in the archive", p)
			continue
		}
		if !strings.HasSuffix(p, ".ko") || !strings.HasPrefix(string(e.data), "\x7fELF") {
			t.Errorf("%s: want an uncompressed .ko ELF", p)
		}
		if _, err := elf.NewFile(strings.NewReader(string(e.data))); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		order = append(order, moduleName(p))
	}
	if !slices.Equal(order, res.Modules) {
		t.Errorf("load list order %v, want Result.Modules %v", order, res.Modules)
	}
	db, err := loadModuleDB(DefaultModulesDir, version)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range order {
		for _, dep := range db.deps[m] {
			if j := slices.Index(order, dep); j < 0 || j > i {
				t.Errorf("module %s (position %d) needs %s, which is at position %d: want it before", m, i, dep, j)
			}
		}
	}
	for _, m := range DefaultModules() {
		if !slices.Contains(order, m) && !slices.Contains(res.Builtin, m) {
			t.Errorf("requested module %s is neither loaded nor built in", m)
		}
	}
	// On a kernel where they are modules, the virtio core comes before the
	// block driver (the Debian cloud kernel: virtio, virtio_ring are modules).
	if bi, vi := slices.Index(order, "virtio_blk"), slices.Index(order, "virtio_ring"); bi >= 0 && vi >= 0 && vi > bi {
		t.Errorf("virtio_ring at %d after virtio_blk at %d", vi, bi)
	}

	again, err := Build(ctx, Options{KernelVersion: version, InitBinary: initBin, OutputDir: out})
	if err != nil {
		t.Fatalf("second Build: %v", err)
	}
	if !again.Reused || again.Path != res.Path {
		t.Errorf("second build: got Reused=%v Path=%s, want Reused=true Path=%s", again.Reused, again.Path, res.Path)
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 1 {
		t.Errorf("output dir holds %d files, want 1 (no temp files left)", len(ents))
	}
}
