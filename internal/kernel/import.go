package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrNotFound is wrapped when a kernel id has no directory in the kernels dir.
var ErrNotFound = errors.New("kernel not found")

// Files inside one kernel's directory, Dir/<hex digest>/.
const (
	kernelFile = "kernel" // the image, as imported (bzImage or vmlinux)
	initrdFile = "initrd"
	configFile = "config"
	metaFile   = "kernel.json" // written last: a directory without it is not a kernel
)

// DefaultBootDir is where distributions install kernels and their configs.
const DefaultBootDir = "/boot"

// ImportRequest names the files to import.
type ImportRequest struct {
	KernelPath string // required: a bzImage (vmlinuz) or an ELF vmlinux
	InitrdPath string // optional
	// ConfigPath is a kernel .config to record when the kernel embeds none;
	// default: config-RELEASE beside the kernel, else in BootDir.
	ConfigPath string
	// Name is the name to record; default the kernel's release, else the
	// file's base name. Names are the store's to keep unique; Import only
	// proposes one.
	Name string
	// Dir is the kernels directory (layout.KernelsDir()). Required.
	Dir string
	// BootDir is searched for config-RELEASE; default DefaultBootDir.
	BootDir string
	// Source is recorded as where the kernel came from; default KernelPath.
	Source string
}

// Kernel is an imported kernel: its files under Dir/<hex>/ and what they are.
// ID, Name, Path and InitrdPath are what store.Kernel records.
type Kernel struct {
	// ID is "sha256:<hex>": the kernel file's digest when there is no
	// initrd, else the digest of both digests, so a kernel imported with
	// two different initrds is two kernels.
	ID         string `json:"id"`
	Name       string `json:"-"` // proposed name; the store's is authoritative
	Path       string `json:"-"`
	InitrdPath string `json:"-"`
	// ConfigPath is the recorded kernel config ("" if none was found).
	ConfigPath string `json:"-"`

	KernelDigest string      `json:"kernel_digest"`
	InitrdDigest string      `json:"initrd_digest,omitempty"`
	Info         Info        `json:"info"`
	Initrd       *InitrdInfo `json:"initrd,omitempty"`
	// ConfigSource says where the config came from: "embedded", a path, an
	// image path, or "" when there is none.
	ConfigSource string    `json:"config_source,omitempty"`
	Source       string    `json:"source"`
	ImportedAt   time.Time `json:"imported_at"`

	// Existing is set by Import and Pull when the same kernel (and initrd)
	// was already in Dir: nothing was copied.
	Existing bool `json:"-"`
}

// Config reads the recorded kernel config; nil, nil if there is none.
func (k Kernel) Config() (map[string]string, error) {
	if k.ConfigPath == "" {
		return nil, nil
	}
	return ReadConfigFile(k.ConfigPath)
}

// Import checks that req.KernelPath is a Linux kernel and req.InitrdPath
// (if given) an initrd, and copies them, with the kernel's config when one
// is found, into req.Dir/<hex>/, named by content. The directory appears
// whole (staged, then renamed) or not at all. Importing the same files again
// copies nothing and returns the existing kernel with Existing set.
func Import(ctx context.Context, req ImportRequest) (Kernel, error) {
	if req.KernelPath == "" {
		return Kernel{}, fmt.Errorf("kernel import: no kernel file given")
	}
	if req.Dir == "" {
		return Kernel{}, fmt.Errorf("kernel import: no kernels directory")
	}
	src := req.Source
	if src == "" {
		src = req.KernelPath
		if abs, err := filepath.Abs(src); err == nil {
			src = abs
		}
	}
	return commit(ctx, staged{
		kernel: req.KernelPath,
		initrd: req.InitrdPath,
		config: req.ConfigPath,
		configFor: func(release string) (string, string) {
			p := siblingConfig(req.KernelPath, bootDir(req.BootDir), release)
			return p, p
		},
		name:       req.Name,
		source:     src,
		dir:        req.Dir,
		fallbackNm: filepath.Base(req.KernelPath),
	})
}

func bootDir(d string) string {
	if d == "" {
		return DefaultBootDir
	}
	return d
}

// staged is what commit needs, from Import or Pull.
type staged struct {
	kernel, initrd string
	// kernelName and initrdName name the files in errors; default their paths.
	kernelName, initrdName string
	config                 string // an explicit config file, or ""
	// configFor finds a config file for a release when the kernel embeds
	// none and config is empty: its path and how to describe its source.
	configFor  func(release string) (path, source string)
	name       string
	fallbackNm string
	source     string
	dir        string
}

// commit copies the files into a staging directory under dir, checks the
// copies (so what is checked is what is kept), and renames the staging
// directory to its content address.
func commit(ctx context.Context, s staged) (k Kernel, err error) {
	if s.kernelName == "" {
		s.kernelName = s.kernel
	}
	if s.initrdName == "" {
		s.initrdName = s.initrd
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return Kernel{}, fmt.Errorf("kernels directory: %w", err)
	}
	tmp, err := os.MkdirTemp(s.dir, ".import-*")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernels directory: %w", err)
	}
	defer func() {
		if err != nil || k.Existing {
			os.RemoveAll(tmp)
		}
	}()

	kd, err := copyFile(ctx, s.kernel, filepath.Join(tmp, kernelFile))
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: %w", s.kernelName, err)
	}
	// The copy is checked, so that what is checked is what is kept; errors
	// name the user's file.
	info, err := inspect(filepath.Join(tmp, kernelFile), s.kernelName)
	if err != nil {
		return Kernel{}, err
	}
	k = Kernel{KernelDigest: kd, Info: info, Source: s.source, ImportedAt: time.Now().UTC()}
	k.ID = kd
	if s.initrd != "" {
		id, err := copyFile(ctx, s.initrd, filepath.Join(tmp, initrdFile))
		if err != nil {
			return Kernel{}, fmt.Errorf("initrd %s: %w", s.initrdName, err)
		}
		ii, err := inspectInitrd(filepath.Join(tmp, initrdFile), s.initrdName)
		if err != nil {
			return Kernel{}, err
		}
		k.InitrdDigest, k.Initrd = id, &ii
		h := sha256.Sum256([]byte("kernel " + kd + "\ninitrd " + id + "\n"))
		k.ID = "sha256:" + hex.EncodeToString(h[:])
	}

	final := filepath.Join(s.dir, strings.TrimPrefix(k.ID, "sha256:"))
	if existing, err := load(final); err == nil {
		existing.Existing = true
		existing.Name = proposeName(s, existing.Info)
		k = existing
		return k, nil
	}

	if err := writeConfig(ctx, s, &k, filepath.Join(tmp, configFile)); err != nil {
		return Kernel{}, err
	}
	meta, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return Kernel{}, err
	}
	if err := writeFileSync(filepath.Join(tmp, metaFile), meta); err != nil {
		return Kernel{}, fmt.Errorf("kernel metadata: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another import of the same kernel won the race: use its copy.
		if existing, lerr := load(final); lerr == nil {
			existing.Existing = true
			existing.Name = proposeName(s, existing.Info)
			k = existing
			return k, nil
		}
		return Kernel{}, fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	if err := syncDir(s.dir); err != nil {
		return Kernel{}, err
	}
	k.Name = proposeName(s, k.Info)
	k.setPaths(final)
	return k, nil
}

func proposeName(s staged, info Info) string {
	switch {
	case s.name != "":
		return s.name
	case info.Release != "":
		return info.Release
	}
	return s.fallbackNm
}

// writeConfig records the kernel's config: the embedded one, else the
// explicit file, else one found for its release. A missing config is not an
// error (the Firecracker check then says it cannot tell); a bad explicit one is.
func writeConfig(ctx context.Context, s staged, k *Kernel, dst string) error {
	var cfgPath, source string
	switch {
	case k.Info.config != nil:
		keys := slices.Sorted(maps.Keys(k.Info.config))
		var b strings.Builder
		for _, key := range keys {
			fmt.Fprintf(&b, "%s=%s\n", key, k.Info.config[key])
		}
		k.ConfigSource = "embedded"
		return writeFileSync(dst, []byte(b.String()))
	case s.config != "":
		cfgPath, source = s.config, s.config
		if _, err := ReadConfigFile(cfgPath); err != nil {
			return fmt.Errorf("kernel config: %w", err)
		}
	case s.configFor != nil:
		cfgPath, source = s.configFor(k.Info.Release)
		if cfgPath == "" {
			return nil
		}
		if _, err := ReadConfigFile(cfgPath); err != nil {
			k.Info.Notes = append(k.Info.Notes, fmt.Sprintf("config %s ignored: %v", source, err))
			return nil
		}
	default:
		return nil
	}
	if _, err := copyFile(ctx, cfgPath, dst); err != nil {
		return fmt.Errorf("kernel config %s: %w", source, err)
	}
	k.ConfigSource = source
	return nil
}

func (k *Kernel) setPaths(dir string) {
	k.Path = filepath.Join(dir, kernelFile)
	if k.InitrdDigest != "" {
		k.InitrdPath = filepath.Join(dir, initrdFile)
	}
	if k.ConfigSource != "" {
		k.ConfigPath = filepath.Join(dir, configFile)
	}
}

// Load returns the kernel with id ("sha256:<hex>" or "<hex>") from dir.
func Load(dir, id string) (Kernel, error) {
	hexID, err := hexOf(id)
	if err != nil {
		return Kernel{}, err
	}
	k, err := load(filepath.Join(dir, hexID))
	if errors.Is(err, os.ErrNotExist) {
		return Kernel{}, fmt.Errorf("kernel %s: %w", id, ErrNotFound)
	}
	return k, err
}

func load(kdir string) (Kernel, error) {
	b, err := os.ReadFile(filepath.Join(kdir, metaFile))
	if err != nil {
		return Kernel{}, err
	}
	var k Kernel
	if err := json.Unmarshal(b, &k); err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: %s: %w", filepath.Base(kdir), metaFile, err)
	}
	k.setPaths(kdir)
	return k, nil
}

// Remove deletes kernel id's files from dir. Call it after the store has
// forgotten the kernel (store.DeleteKernel refuses while VMs use it).
func Remove(dir, id string) error {
	hexID, err := hexOf(id)
	if err != nil {
		return err
	}
	kdir := filepath.Join(dir, hexID)
	if _, err := os.Stat(kdir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kernel %s: %w", id, ErrNotFound)
	}
	// Rename first so that a half-removed kernel never looks whole.
	trash := filepath.Join(dir, ".rm-"+hexID)
	if err := os.Rename(kdir, trash); err != nil {
		return fmt.Errorf("kernel %s: %w", id, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("kernel %s: %w", id, err)
	}
	return nil
}

func hexOf(id string) (string, error) {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("kernel id %q: want sha256:<64 hex digits>", id)
	}
	return h, nil
}

// copyFile copies src to a new file dst, synced, and returns the content's
// "sha256:<hex>".
func copyFile(ctx context.Context, src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil {
		return "", err
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("not a regular file")
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), ctxReader{ctx, in})
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(p string) error {
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return nil
}

// Reap removes what interrupted imports, pulls and removals left in dir
// (their staging directories). Call it when the daemon opens, before any
// import starts: it would also remove the staging of one in progress.
func Reap(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kernels directory: %w", err)
	}
	var errs []error
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".import-") || strings.HasPrefix(n, ".pull-") || strings.HasPrefix(n, ".rm-") {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
