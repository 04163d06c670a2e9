package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"banger/internal/disk"
	"banger/internal/portfwd"
	"banger/internal/store"
)

// CreateRequest is what `banger vm create|run` asks for.
type CreateRequest struct {
	Name      string   // "" generates one
	Image     string   // tag or digest
	Kernel    string   // "" for the default kernel
	Driver    string   // "" for the default driver
	CPUs      int      // 0: 1
	MemoryMiB int      // 0: 512
	DiskBytes int64    // 0: the image's size
	Env       []string // K=V for exec'd commands
	Publish   []string // HOST:GUEST TCP ports
	// DiskStrategy makes the root disk (auto, dm-snapshot, reflink, qcow2, copy);
	// "" takes the configured default.
	DiskStrategy string
}

// Resource bounds. The minimum memory is what the default kernel and the agent
// need to reach userspace.
const (
	DefaultMemoryMiB = 512
	MinMemoryMiB     = 128
	MaxCPUs          = 64
)

func (s *Service) validate(ctx context.Context, req *CreateRequest) error {
	if req.Name == "" {
		req.Name = generateName(func(n string) bool { _, err := s.d.Store.GetVM(ctx, n); return err == nil })
	}
	if err := ValidateName(req.Name); err != nil {
		return fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	if req.Image == "" {
		return fmt.Errorf("no image given: name one from `banger image ls`, or pull one with `banger image pull`: %w", ErrInvalid)
	}
	if req.CPUs == 0 {
		req.CPUs = 1
	}
	if req.CPUs < 0 || req.CPUs > MaxCPUs {
		return fmt.Errorf("--cpus %d is out of range 1-%d: %w", req.CPUs, MaxCPUs, ErrInvalid)
	}
	if n := runtime.NumCPU(); req.CPUs > 4*n {
		return fmt.Errorf("--cpus %d is more than 4× this host's %d CPUs: %w", req.CPUs, n, ErrInvalid)
	}
	if req.MemoryMiB == 0 {
		req.MemoryMiB = DefaultMemoryMiB
	}
	if req.MemoryMiB < MinMemoryMiB {
		return fmt.Errorf("--memory %dM is too little: a guest needs at least %dM to boot the kernel and the agent: %w", req.MemoryMiB, MinMemoryMiB, ErrInvalid)
	}
	if req.DiskBytes < 0 {
		return fmt.Errorf("--disk must not be negative: %w", ErrInvalid)
	}
	for _, e := range req.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("--env %q: write it as KEY=VALUE: %w", e, ErrInvalid)
		}
	}
	if _, err := portfwd.ParseSpecs(req.Publish); err != nil {
		return fmt.Errorf("--publish: %w: %w", err, ErrInvalid)
	}
	// A host port that is taken is found now, not after a boot.
	if err := s.d.Ports.Check("", req.Publish); err != nil {
		return fmt.Errorf("%w: %w", err, ErrConflict)
	}
	if req.Driver == "" {
		req.Driver = s.d.DefaultDriver
	}
	if req.DiskStrategy == "" {
		req.DiskStrategy = s.d.DefaultDiskStrategy
	}
	if req.DiskStrategy == "" {
		req.DiskStrategy = disk.NameAuto
	}
	if err := disk.ValidName(req.DiskStrategy); err != nil {
		return fmt.Errorf("--disk-strategy: %w: %w", err, ErrInvalid)
	}
	if _, err := s.driver(req.Driver); err != nil {
		return err
	}
	return nil
}

// Create makes a VM: its record and IP lease, its copy-on-write disk and its SSH
// host key, trusted in banger's known_hosts. Nothing runs yet. A failure undoes
// every step already taken, in reverse order.
func (s *Service) Create(ctx context.Context, req CreateRequest) (_ VM, err error) {
	if err := s.validate(ctx, &req); err != nil {
		return VM{}, err
	}
	img, err := s.d.Images.EnsureAgent(ctx, req.Image)
	if errors.Is(err, store.ErrNotFound) {
		return VM{}, &store.NotFoundError{Kind: "image", Ref: req.Image, Hint: "banger image ls lists them; get it with banger image pull " + req.Image}
	}
	if err != nil {
		return VM{}, fmt.Errorf("image %q: %w", req.Image, err)
	}
	kern, err := s.d.Kernels.Resolve(ctx, req.Kernel)
	if err != nil {
		return VM{}, err
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	cleanup := context.WithoutCancel(ctx) // undo runs even when ctx was cancelled

	id := newID()
	spec := vmSpec{Env: req.Env, Publish: req.Publish}
	rec := store.VM{
		ID: id, Name: req.Name, ImageID: img.ID, KernelID: kern.ID, State: store.VMCreated,
		CPUs: req.CPUs, MemoryMiB: req.MemoryMiB, DiskBytes: req.DiskBytes, Driver: req.Driver, Spec: spec.encode(),
	}
	ip, err := s.d.Store.CreateVMWithLease(ctx, rec, s.d.Network.Bridge())
	if errors.Is(err, store.ErrExists) {
		return VM{}, fmt.Errorf("a VM named %q already exists: choose another --name, or remove it (banger vm rm %s): %w", req.Name, req.Name, ErrConflict)
	}
	if err != nil {
		return VM{}, err
	}
	undo = append(undo, func() { _ = s.d.Store.DeleteVM(cleanup, id) })

	d, err := s.d.Disks.Clone(ctx, req.DiskStrategy, req.Driver, img.Path, disk.CloneRequest{
		VMID: id, Dir: filepath.Join(s.d.Layout.DisksDir(), id), SizeBytes: req.DiskBytes,
	})
	if err != nil {
		return VM{}, fmt.Errorf("vm %q: root disk: %w", req.Name, err)
	}
	undo = append(undo, func() { _ = s.d.Disks.Remove(cleanup, d) })
	raw, _ := json.Marshal(d)
	if err := s.d.Store.SetVMDisk(ctx, id, raw); err != nil {
		return VM{}, err
	}

	_, pub, err := s.d.SSH.HostKey(id)
	if err != nil {
		return VM{}, fmt.Errorf("vm %q: ssh host key: %w", req.Name, err)
	}
	undo = append(undo, func() { _ = s.d.SSH.DeleteHostKey(id) })
	names := s.dnsNames(rec, ip)
	if err := s.d.SSH.Trust(names, pub); err != nil {
		return VM{}, fmt.Errorf("vm %q: known_hosts: %w", req.Name, err)
	}
	undo = append(undo, func() { _ = s.d.SSH.Forget(names) })

	s.log.Info("vm created", "vm", req.Name, "id", id, "ip", ip, "image", img.ID, "disk", d.Strategy)
	return s.Get(ctx, id)
}

// Run creates and starts a VM (`banger vm run`). A VM whose start fails is
// removed again, so a failed run leaves nothing behind; the start's error, with
// the console's last lines, is returned.
func (s *Service) Run(ctx context.Context, req CreateRequest) (VM, error) {
	v, err := s.Create(ctx, req)
	if err != nil {
		return VM{}, err
	}
	started, err := s.Start(ctx, v.ID)
	if err != nil {
		if _, rmErr := s.Remove(context.WithoutCancel(ctx), v.ID, true); rmErr != nil {
			s.log.Error("remove a VM whose start failed", "vm", v.Name, "err", rmErr)
		}
		return VM{}, err
	}
	return started, nil
}
