package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"banger/internal/initramfs/guestinit"
)

// DefaultModules returns what a banger guest needs from a distribution
// kernel: virtio transports (PCI for q35, MMIO for microvm and Firecracker),
// the root disk, the network, the agent's virtio-serial port and vsock, and
// the root and overlay filesystems. Those built into the kernel cost nothing.
func DefaultModules() []string {
	return []string{
		"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console",
		"vsock", "vmw_vsock_virtio_transport", "ext4", "overlay",
	}
}

// DefaultModulesDir is where distributions install kernel modules.
const DefaultModulesDir = "/lib/modules"

// formatVersion is part of every build key: bump it when the archive's
// layout changes, so that old builds are not reused.
const formatVersion = "banger-initramfs-1"

// Options say what goes into an initramfs.
type Options struct {
	// KernelVersion is the release (uname -r) whose modules are used. Required.
	KernelVersion string
	// ModulesDir holds one directory per kernel release; default DefaultModulesDir.
	ModulesDir string
	// Modules to include, with everything they depend on; default
	// DefaultModules(). nil means the default; an empty non-nil slice, none.
	Modules []string
	// InitBinary is the statically linked banger-init, which becomes /init. Required.
	InitBinary string
	// OutputDir is where the initramfs is written, named by its build key;
	// it is created if needed. Required.
	OutputDir string
}

// Result describes a built (or reused) initramfs.
type Result struct {
	Path    string   // OutputDir/initramfs-VERSION-KEY.img, gzip-compressed newc cpio
	Key     string   // sha256 of the inputs (see Build)
	Modules []string // module names in the order /init loads them
	Builtin []string // requested or needed modules that the kernel has built in
	Reused  bool     // an identical build existed and was returned
}

// Build writes an initramfs holding /init (opts.InitBinary), the modules
// (decompressed) under /lib/modules/VERSION and the load-order list
// guestinit.ModulesList, or returns the existing one built from the same
// inputs. The key hashes the kernel release, the requested module list, the
// init binary and the kernel's modules.dep and modules.builtin, so a new
// banger-init or a reinstalled kernel gives a new file, and anything else
// reuses the old one. The file appears whole or not at all (temp + rename).
func Build(ctx context.Context, opts Options) (res Result, err error) {
	if opts.KernelVersion == "" || strings.ContainsAny(opts.KernelVersion, "/\x00") || opts.KernelVersion == ".." {
		return Result{}, fmt.Errorf("initramfs: kernel version %q: want a release such as `uname -r` prints", opts.KernelVersion)
	}
	if opts.InitBinary == "" {
		return Result{}, fmt.Errorf("initramfs: no init binary: build cmd/banger-init (CGO_ENABLED=0) and pass its path")
	}
	if opts.OutputDir == "" {
		return Result{}, fmt.Errorf("initramfs: no output directory")
	}
	if opts.ModulesDir == "" {
		opts.ModulesDir = DefaultModulesDir
	}
	if opts.Modules == nil {
		opts.Modules = DefaultModules()
	}
	if err := checkStatic(opts.InitBinary); err != nil {
		return Result{}, err
	}
	db, err := loadModuleDB(opts.ModulesDir, opts.KernelVersion)
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	r, err := db.resolve(opts.Modules)
	if err != nil {
		return Result{}, fmt.Errorf("initramfs for kernel %s: %w", opts.KernelVersion, err)
	}
	res = Result{Modules: r.order, Builtin: r.builtin}

	key, err := buildKey(opts, db.dir)
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	res.Key = key
	res.Path = filepath.Join(opts.OutputDir, fmt.Sprintf("initramfs-%s-%s.img", opts.KernelVersion, key[:16]))
	if _, err := os.Stat(res.Path); err == nil {
		res.Reused = true
		return res, nil
	}
	if err := os.MkdirAll(opts.OutputDir, 0o750); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	tmp, err := os.CreateTemp(opts.OutputDir, ".initramfs-*.tmp")
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	zw := gzip.NewWriter(tmp)
	if err := writeArchive(ctx, zw, opts, db, r.order); err != nil {
		return Result{}, fmt.Errorf("initramfs for kernel %s: %w", opts.KernelVersion, err)
	}
	if err := zw.Close(); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), res.Path); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	return res, nil
}

// checkStatic refuses an init binary that needs a dynamic loader: the
// initramfs has no libc, and the kernel would fail to exec it with a bare
// "No working init found".
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("initramfs: init binary %s: not an ELF executable (%v)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("initramfs: init binary %s is dynamically linked: build it with CGO_ENABLED=0", p)
		}
	}
	return nil
}

func buildKey(opts Options, modDir string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", formatVersion, opts.KernelVersion, strings.Join(opts.Modules, ","))
	for _, p := range []string{opts.InitBinary, filepath.Join(modDir, "modules.dep"), filepath.Join(modDir, "modules.builtin")} {
		sum, err := fileSHA256(p)
		if os.IsNotExist(err) && p != opts.InitBinary {
			sum = "absent"
		} else if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00", sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeArchive writes the cpio: directories first (the kernel's unpacker
// does not create parents), then /dev/console, /init, the modules and the
// load-order list.
func writeArchive(ctx context.Context, w io.Writer, opts Options, db *moduleDB, order []string) error {
	cw := &cpioWriter{w: w}
	modRoot := path.Join("lib/modules", opts.KernelVersion)
	var list bytes.Buffer
	type modFile struct{ name, dst, src string }
	mods := make([]modFile, 0, len(order))
	dirs := map[string]bool{"dev": true, "proc": true, "sys": true, "run": true, "newroot": true, path.Dir(guestinit.ModulesList)[1:]: true}
	for _, m := range order {
		rel := db.path[m]
		dst := path.Join(modRoot, stripCompression(rel))
		mods = append(mods, modFile{name: m, dst: dst, src: filepath.Join(db.dir, rel)})
		fmt.Fprintf(&list, "/%s\n", dst)
		for d := path.Dir(dst); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	dirs["lib/modules"] = true
	for d := range dirs {
		for p := path.Dir(d); p != "."; p = path.Dir(p) {
			dirs[p] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents sort before their children
	for _, d := range sorted {
		if err := cw.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	init, err := os.Open(opts.InitBinary)
	if err != nil {
		return fmt.Errorf("init binary: %w", err)
	}
	defer init.Close()
	fi, err := init.Stat()
	if err != nil {
		return fmt.Errorf("init binary: %w", err)
	}
	if err := cw.File("init", 0o755, fi.Size(), init); err != nil {
		return err
	}
	for _, m := range mods {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := readModule(m.src)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.name, err)
		}
		if err := cw.File(m.dst, 0o644, int64(len(data)), bytes.NewReader(data)); err != nil {
			return err
		}
	}
	if err := cw.File(guestinit.ModulesList[1:], 0o644, int64(list.Len()), &list); err != nil {
		return err
	}
	return cw.Close()
}

func stripCompression(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+ext) {
			return strings.TrimSuffix(p, ext)
		}
	}
	return p
}

// maxModuleSize bounds a decompressed module; the largest in-tree modules
// (GPU drivers) are tens of MiB.
const maxModuleSize = 256 << 20

// readModule returns a module file's content, decompressed, so that /init
// can hand it to finit_module without decompression support of its own
// (and without relying on the kernel's CONFIG_MODULE_DECOMPRESS).
func readModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: xz: %w", p, err)
		}
		r = xr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: zstd: %w", p, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: gzip: %w", p, err)
		}
		r = gr
	}
	data, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(data) > maxModuleSize {
		return nil, fmt.Errorf("%s: larger than %d MiB decompressed", p, maxModuleSize>>20)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s: not an ELF module after decompression", p)
	}
	return data, nil
}
