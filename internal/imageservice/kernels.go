package imageservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"banger/internal/kernel"
	"banger/internal/store"
)

// KernelStore is the part of the state store kernels need.
type KernelStore interface {
	PutKernel(ctx context.Context, k store.Kernel) error
	GetKernel(ctx context.Context, idOrName string) (store.Kernel, error)
	ListKernels(ctx context.Context) ([]store.Kernel, error)
	DeleteKernel(ctx context.Context, id string) error
}

// KernelDeps configure the kernel half of the service.
type KernelDeps struct {
	Store      KernelStore
	KernelsDir string
	// InitBinary is banger-init, the initramfs's /init for the default kernel; ""
	// means there is no default kernel until one is imported and named.
	InitBinary string
}

// Kernels owns kernel records: import, pull, inspect, remove, and the default
// kernel for the QEMU driver (the host's own, with an initramfs banger builds).
type Kernels struct {
	d KernelDeps

	mu       sync.Mutex   // guards def
	def      store.Kernel // the default kernel, once made
	defReady bool
}

// NewKernels returns the kernel service and removes staging leftovers of
// interrupted imports.
func NewKernels(d KernelDeps) (*Kernels, error) {
	if d.Store == nil || d.KernelsDir == "" {
		return nil, errors.New("kernels: Store and KernelsDir are required")
	}
	if err := os.MkdirAll(d.KernelsDir, 0o750); err != nil {
		return nil, err
	}
	if err := kernel.Reap(d.KernelsDir); err != nil {
		return nil, fmt.Errorf("kernels: clean up interrupted imports: %w", err)
	}
	return &Kernels{d: d}, nil
}

func (k *Kernels) record(ctx context.Context, kk kernel.Kernel, name string) (store.Kernel, error) {
	if name == "" {
		name = kk.Name
	}
	meta, _ := json.Marshal(kk)
	rec := store.Kernel{ID: kk.ID, Name: name, Path: kk.Path, InitrdPath: kk.InitrdPath, Version: kk.Info.Release, Meta: meta}
	if existing, err := k.d.Store.GetKernel(ctx, kk.ID); err == nil {
		return existing, nil // the same kernel again: keep its name
	}
	if err := k.d.Store.PutKernel(ctx, rec); err != nil {
		if errors.Is(err, store.ErrExists) {
			return store.Kernel{}, fmt.Errorf("a kernel named %q exists already: pass --name to import this one under another name: %w", name, err)
		}
		return store.Kernel{}, err
	}
	return k.d.Store.GetKernel(ctx, kk.ID)
}

// Import records a kernel file (and optional initrd).
func (k *Kernels) Import(ctx context.Context, path, initrd, name string) (store.Kernel, error) {
	kk, err := kernel.Import(ctx, kernel.ImportRequest{KernelPath: path, InitrdPath: initrd, Name: name, Dir: k.d.KernelsDir})
	if err != nil {
		return store.Kernel{}, err
	}
	rec, err := k.record(ctx, kk, name)
	if err != nil && !kk.Existing {
		_ = kernel.Remove(k.d.KernelsDir, kk.ID) // no files without a record
	}
	return rec, err
}

// Pull records the kernel an OCI image carries at /boot.
func (k *Kernels) Pull(ctx context.Context, ref, name string) (store.Kernel, error) {
	kk, err := kernel.Pull(ctx, kernel.PullRequest{Ref: ref, Name: name, Dir: k.d.KernelsDir})
	if err != nil {
		return store.Kernel{}, err
	}
	rec, err := k.record(ctx, kk, name)
	if err != nil && !kk.Existing {
		_ = kernel.Remove(k.d.KernelsDir, kk.ID)
	}
	return rec, err
}

// List returns the kernels.
func (k *Kernels) List(ctx context.Context) ([]store.Kernel, error) {
	return k.d.Store.ListKernels(ctx)
}

// Get returns one kernel by id or name.
func (k *Kernels) Get(ctx context.Context, ref string) (store.Kernel, error) {
	return k.d.Store.GetKernel(ctx, ref)
}

// Readiness is what `kernel inspect` says about booting a kernel.
type Readiness struct {
	Firecracker string `json:"firecracker"`
	QEMU        string `json:"qemu"`
}

// Inspect reports whether the kernel can boot under each driver, from its config.
func (k *Kernels) Inspect(ctx context.Context, ref string) (store.Kernel, Readiness, error) {
	rec, err := k.d.Store.GetKernel(ctx, ref)
	if err != nil {
		return store.Kernel{}, Readiness{}, err
	}
	var kk kernel.Kernel
	_ = json.Unmarshal(rec.Meta, &kk)
	kk.Path, kk.InitrdPath = rec.Path, rec.InitrdPath
	if kk.ConfigPath == "" {
		if c := filepath.Join(filepath.Dir(rec.Path), "config"); fileExists(c) {
			kk.ConfigPath = c
		}
	}
	var r Readiness
	if fc, err := kernel.CheckFirecrackerKernel(kk); err != nil {
		r.Firecracker = "unknown: " + err.Error()
	} else {
		r.Firecracker = fc.String()
	}
	if kk.ConfigPath != "" {
		if cfg, err := kernel.ReadConfigFile(kk.ConfigPath); err == nil {
			r.QEMU = kernel.CheckQEMU(cfg).String()
		}
	}
	if r.QEMU == "" {
		r.QEMU = "unknown: no kernel config recorded"
	}
	return rec, r, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Remove deletes a kernel's record and files; refused while VMs use it.
func (k *Kernels) Remove(ctx context.Context, ref string) (store.Kernel, error) {
	rec, err := k.d.Store.GetKernel(ctx, ref)
	if err != nil {
		return store.Kernel{}, err
	}
	if err := k.d.Store.DeleteKernel(ctx, rec.ID); err != nil {
		return store.Kernel{}, err
	}
	if err := kernel.Remove(k.d.KernelsDir, rec.ID); err != nil && !errors.Is(err, os.ErrNotExist) {
		return rec, fmt.Errorf("kernel %s: record removed, files not: %w", rec.Name, err)
	}
	k.mu.Lock()
	if k.def.ID == rec.ID {
		k.def, k.defReady = store.Kernel{}, false
	}
	k.mu.Unlock()
	return rec, nil
}

// Resolve returns the kernel ref names, or the default kernel for "".
func (k *Kernels) Resolve(ctx context.Context, ref string) (store.Kernel, error) {
	if ref != "" {
		rec, err := k.d.Store.GetKernel(ctx, ref)
		if errors.Is(err, store.ErrNotFound) {
			return store.Kernel{}, &store.NotFoundError{Kind: "kernel", Ref: ref, Hint: "banger kernel ls lists them; import one with banger kernel import PATH"}
		}
		return rec, err
	}
	return k.Default(ctx)
}

// Default returns the default kernel: the host's /boot kernel with an initramfs
// banger builds from its modules, imported (content-addressed) on first use.
func (k *Kernels) Default(ctx context.Context) (store.Kernel, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.defReady {
		if _, err := k.d.Store.GetKernel(ctx, k.def.ID); err == nil {
			return k.def, nil
		}
	}
	if k.d.InitBinary == "" {
		return store.Kernel{}, errors.New("no default kernel: banger-init was not found beside bangerd (scripts/build.sh builds it); or pass --kernel with an imported kernel")
	}
	qd, err := kernel.DefaultQEMU(ctx, kernel.QEMUDefaultRequest{InitBinary: k.d.InitBinary, Dir: filepath.Join(k.d.KernelsDir, "initramfs")})
	if err != nil {
		return store.Kernel{}, fmt.Errorf("default kernel: %w (install a kernel with its modules, e.g. apt-get install linux-image-cloud-amd64, or import one with banger kernel import)", err)
	}
	kk, err := kernel.Import(ctx, kernel.ImportRequest{KernelPath: qd.Kernel.Path, InitrdPath: qd.Initramfs.Path, ConfigPath: qd.Kernel.ConfigPath, Dir: k.d.KernelsDir, Source: "host " + qd.Kernel.Path})
	if err != nil {
		return store.Kernel{}, fmt.Errorf("default kernel: %w", err)
	}
	name := "host-" + qd.Kernel.Release + "-" + strings.TrimPrefix(kk.ID, "sha256:")[:8]
	rec, err := k.record(ctx, kk, name)
	if err != nil {
		return store.Kernel{}, err
	}
	k.def, k.defReady = rec, true
	return rec, nil
}
