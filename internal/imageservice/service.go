// Package imageservice is bangerd's ImageService: it owns the image records, turns
// pulls and imports into content-addressed ext4 root images (through the image
// library), injects the guest agent into each, and refuses to remove an image a VM
// is made from.
package imageservice

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/image"
	"banger/internal/image/progress"
	"banger/internal/keylock"
	"banger/internal/store"
)

// Store is the part of the state store images need.
type Store interface {
	PutImage(ctx context.Context, img store.Image) error
	GetImage(ctx context.Context, ref string) (store.Image, error)
	ListImages(ctx context.Context) ([]store.Image, error)
	DeleteImage(ctx context.Context, id string) error
	UntagImage(ctx context.Context, tag string) error
	ListVMs(ctx context.Context) ([]store.VM, error)
}

// Builder is the image library.
type Builder interface {
	Resolve(ctx context.Context, ref string) (image.Resolved, error)
	Pull(ctx context.Context, ref, dst string, opts image.Options) (image.Result, error)
	ResolveImport(ctx context.Context, absPath string) (image.Resolved, error)
	Import(ctx context.Context, absPath, dst string, opts image.Options) (image.Result, error)
	Reinject(ctx context.Context, src, dst string, files []image.InjectFile) (int64, error)
}

// Agent is the guest agent put into every image.
type Agent struct {
	// Path is the static banger-agent binary; empty disables injection (a daemon
	// that cannot find the agent refuses pulls instead, see Deps.AgentErr).
	Path string
	// Version identifies the binary's content; an image carrying another version
	// is re-injected before use.
	Version string
}

// AgentFromFile describes the agent binary at path, its version being a digest of
// its content (so any rebuild counts as new). A dynamically linked agent is refused:
// it runs as the guest's init before any loader or library of the image can be
// relied on, and fails there with a bare "no such file or directory".
func AgentFromFile(path string) (Agent, error) {
	f, err := os.Open(path)
	if err != nil {
		return Agent{}, fmt.Errorf("guest agent: %w", err)
	}
	defer f.Close()
	if err := checkStatic(f, path); err != nil {
		return Agent{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Agent{}, fmt.Errorf("guest agent %s: %w", path, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return Agent{}, fmt.Errorf("guest agent %s: %w", path, err)
	}
	return Agent{Path: path, Version: "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]}, nil
}

// checkStatic refuses an ELF file that names a program interpreter (PT_INTERP), the
// mark of a dynamically linked executable. Anything that is not ELF is left to the
// guest to reject.
func checkStatic(r io.ReaderAt, path string) error {
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp := make([]byte, min(p.Filesz, 4096))
		n, _ := p.ReadAt(interp, 0)
		return fmt.Errorf("guest agent %s is dynamically linked (interpreter %s), but it runs in guests that may not have that loader: rebuild it static with scripts/build.sh (or CGO_ENABLED=0 go build -o %s ./cmd/banger-agent)",
			path, strings.TrimRight(string(interp[:n]), "\x00"), path)
	}
	return nil
}

// Deps are the service's explicit dependencies.
type Deps struct {
	Store      Store   // never nil
	Builder    Builder // nil when the image tools are missing: BuilderErr says why
	BuilderErr error
	ImagesDir  string
	Agent      Agent
	// AgentErr says why Agent is empty when the agent exists but is unusable; it is
	// the answer to every request that needs one.
	AgentErr error
	Logger   *slog.Logger
}

// Service is the ImageService.
type Service struct {
	deps Deps
	log  *slog.Logger

	locks keylock.Map // per image id: one conversion or re-injection at a time
}

// New returns the service.
func New(d Deps) (*Service, error) {
	if d.Store == nil || d.ImagesDir == "" {
		return nil, errors.New("imageservice: Store and ImagesDir are required")
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{deps: d, log: log}, nil
}

// ErrNoAgent means images cannot be made because the guest agent is missing.
var ErrNoAgent = errors.New("banger-agent not found")

func (s *Service) builder() (Builder, error) {
	if s.deps.Builder == nil {
		return nil, fmt.Errorf("images cannot be built here: %w", s.deps.BuilderErr)
	}
	if s.deps.Agent.Path == "" {
		if s.deps.AgentErr != nil {
			return nil, fmt.Errorf("%w: %w; then restart bangerd", ErrNoAgent, s.deps.AgentErr)
		}
		return nil, fmt.Errorf("%w: install it beside bangerd (scripts/build.sh puts it in bin/), then restart bangerd", ErrNoAgent)
	}
	return s.deps.Builder, nil
}

func (s *Service) lock(id string) func() { return s.locks.Lock(id) }

// Result is a pulled or imported image.
type Result struct {
	Image  store.Image
	Reused bool // it was there already: nothing downloaded or converted
}

// Pull fetches ref (registry reference, OCI layout, docker archive) and records it
// under its canonical name and name (if set). Pulling an image already present
// downloads and converts nothing.
func (s *Service) Pull(ctx context.Context, ref, name string, onEvent progress.Func) (Result, error) {
	b, err := s.builder()
	if err != nil {
		return Result{}, err
	}
	r, err := b.Resolve(ctx, ref)
	if err != nil {
		return Result{}, err
	}
	return s.materialise(ctx, r, name, onEvent, func(dst string, opts image.Options) (image.Result, error) {
		return b.Pull(ctx, ref, dst, opts)
	})
}

// Import takes a rootfs tarball, a directory or an ext4 file at an absolute path.
// Without a name the image is tagged with the file's base name.
func (s *Service) Import(ctx context.Context, path, name string, onEvent progress.Func) (Result, error) {
	b, err := s.builder()
	if err != nil {
		return Result{}, err
	}
	if !filepath.IsAbs(path) {
		return Result{}, fmt.Errorf("import path %q must be absolute", path)
	}
	r, err := b.ResolveImport(ctx, path)
	if err != nil {
		return Result{}, err
	}
	if name == "" {
		name = defaultName(path)
	}
	return s.materialise(ctx, r, name, onEvent, func(dst string, opts image.Options) (image.Result, error) {
		return b.Import(ctx, path, dst, opts)
	})
}

// ImportLocal imports bangerd's staged copy (path) of a caller's local input: a
// rootfs tarball or ext4 file, or, with asDir, a directory the CLI sent as the
// deterministic tar that importing the directory itself would hash (so the image has
// the same ID either way). source is the caller's path: the image records it, its
// default name comes from it, and messages name it instead of the staged copy.
func (s *Service) ImportLocal(ctx context.Context, path, source string, asDir bool, name string, onEvent progress.Func) (Result, error) {
	onEvent = renamedEvents(onEvent, path, source)
	if name == "" {
		name = defaultName(source)
	}
	b, err := s.builder()
	if err != nil {
		return Result{}, err
	}
	r, err := b.ResolveImport(ctx, path)
	if err != nil {
		return Result{}, local(err, path, source)
	}
	fix := func(r *image.Resolved) {
		r.Source = source
		if asDir {
			r.Kind = image.KindRootfsDir
		}
	}
	fix(&r)
	res, err := s.materialise(ctx, r, name, onEvent, func(dst string, opts image.Options) (image.Result, error) {
		res, err := b.Import(ctx, path, dst, opts)
		fix(&res.Resolved)
		return res, err
	})
	return res, local(err, path, source)
}

// PullLocal pulls ref, a docker-archive: or oci: reference to bangerd's staged copy
// (path) of a caller's archive or layout; source is the caller's path, recorded and
// named in messages instead of the copy.
func (s *Service) PullLocal(ctx context.Context, ref, path, source, name string, onEvent progress.Func) (Result, error) {
	onEvent = renamedEvents(onEvent, path, source)
	b, err := s.builder()
	if err != nil {
		return Result{}, err
	}
	r, err := b.Resolve(ctx, ref)
	if err != nil {
		return Result{}, local(err, path, source)
	}
	r.Source = source
	res, err := s.materialise(ctx, r, name, onEvent, func(dst string, opts image.Options) (image.Result, error) {
		res, err := b.Pull(ctx, ref, dst, opts)
		res.Source = source
		return res, err
	})
	return res, local(err, path, source)
}

// renamedEvents shows the caller's path in progress messages instead of the
// staged copy's.
func renamedEvents(onEvent progress.Func, staged, source string) progress.Func {
	if onEvent == nil {
		return nil
	}
	return func(ev progress.Event) {
		ev.Message = strings.ReplaceAll(ev.Message, staged, source)
		onEvent(ev)
	}
}

// local rewrites the staged copy's path in an error to the caller's, keeping what
// the error wraps (errors.Is still sees ErrNotImage and the rest).
func local(err error, staged, source string) error {
	if err == nil || !strings.Contains(err.Error(), staged) {
		return err
	}
	return &renamedError{msg: strings.ReplaceAll(err.Error(), staged, source), err: err}
}

type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

// defaultName makes a tag from a file name: "debian-rootfs.tar.gz" → "debian-rootfs".
func defaultName(path string) string {
	base := filepath.Base(filepath.Clean(path))
	for _, ext := range []string{".gz", ".zst", ".tgz", ".tar", ".ext4", ".img"} {
		base = strings.TrimSuffix(base, ext)
	}
	if base == "" || base == "." || base == "/" {
		return "imported"
	}
	return base
}

// materialise makes the image r names unless the store has it, tags it, and
// brings its agent up to date.
func (s *Service) materialise(ctx context.Context, r image.Resolved, name string, onEvent progress.Func,
	build func(dst string, opts image.Options) (image.Result, error)) (Result, error) {
	unlock := s.lock(r.ID)
	defer unlock()
	tags := tagsFor(append(append([]string{r.Name}, r.Names...), name)...)

	if img, err := s.deps.Store.GetImage(ctx, r.ID); err == nil {
		img.Tags = tags
		img, err = s.ensureAgentLocked(ctx, img)
		if err != nil {
			return Result{}, err
		}
		if err := s.deps.Store.PutImage(ctx, img); err != nil {
			return Result{}, err
		}
		img, err = s.deps.Store.GetImage(ctx, r.ID)
		if onEvent != nil {
			onEvent(progress.Event{Phase: progress.PhaseDone, Message: r.ID})
		}
		return Result{Image: img, Reused: true}, err
	} else if !errors.Is(err, store.ErrNotFound) {
		return Result{}, err
	}

	if err := os.MkdirAll(s.deps.ImagesDir, 0o750); err != nil {
		return Result{}, err
	}
	dst := s.imagePath(r.ID, s.deps.Agent.Version)
	res, err := build(dst, image.Options{Inject: s.injectFiles(), Progress: onEvent})
	if err != nil {
		return Result{}, err
	}
	meta, _ := json.Marshal(map[string]any{"manifest_digest": res.ManifestDigest, "platform": res.Platform, "layers": res.Layers, "name": res.Name})
	img := store.Image{
		ID: res.ID, Path: res.Path, SizeBytes: res.SizeBytes, Tags: tags,
		Kind: string(res.Kind), Source: res.Source, AgentVersion: s.deps.Agent.Version, Meta: meta,
	}
	if err := s.deps.Store.PutImage(ctx, img); err != nil {
		os.Remove(res.Path) // nothing half-made: no file without its record
		return Result{}, err
	}
	img, err = s.deps.Store.GetImage(ctx, res.ID)
	return Result{Image: img}, err
}

func tagsFor(names ...string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// imagePath names an image file by its digest and the agent it carries, so a
// re-injection writes a new file and never changes one a VM's disk is built on.
func (s *Service) imagePath(id, agentVersion string) string {
	hexID := strings.TrimPrefix(id, "sha256:")
	av := strings.TrimPrefix(agentVersion, "sha256:")
	if len(av) > 8 {
		av = av[:8]
	}
	return filepath.Join(s.deps.ImagesDir, hexID[:min(len(hexID), 32)]+"-a"+av+".ext4")
}

// AgentPaths inside every image.
const (
	AgentBinaryPath  = "/sbin/banger-agent"
	AgentVersionPath = "/etc/banger/agent-version"
	AgentUnitPath    = "/etc/systemd/system/banger-agent.service"
	agentUnitWants   = "/etc/systemd/system/multi-user.target.wants/banger-agent.service"
)

// agentUnit runs the agent as a service in images booted with their own init.
const agentUnit = `[Unit]
Description=banger guest agent: control API and SSH for the host
DefaultDependencies=no
After=local-fs.target

[Service]
ExecStart=/sbin/banger-agent service
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`

// injectFiles are put into every image: the agent (which runs as PID 1 by
// default), its version stamp, and a unit that starts it under the image's own
// systemd when a VM is booted with that instead.
func (s *Service) injectFiles() []image.InjectFile {
	return []image.InjectFile{
		{Path: AgentBinaryPath, Mode: 0o755, Source: s.deps.Agent.Path},
		{Path: AgentVersionPath, Mode: 0o644, Data: []byte(s.deps.Agent.Version + "\n")},
		{Path: AgentUnitPath, Mode: 0o644, Data: []byte(agentUnit)},
		{Path: agentUnitWants, Mode: os.ModeSymlink | 0o777, Target: "../banger-agent.service"},
	}
}

// EnsureAgent brings the image's guest agent up to date before a VM uses it.
func (s *Service) EnsureAgent(ctx context.Context, ref string) (store.Image, error) {
	img, err := s.deps.Store.GetImage(ctx, ref)
	if err != nil {
		return store.Image{}, err
	}
	unlock := s.lock(img.ID)
	defer unlock()
	img, err = s.ensureAgentLocked(ctx, img)
	if err != nil {
		return store.Image{}, err
	}
	return img, s.deps.Store.PutImage(ctx, img)
}

// ensureAgentLocked re-injects the current agent into a new file when img carries
// another; the old file is removed unless VMs are built on it.
func (s *Service) ensureAgentLocked(ctx context.Context, img store.Image) (store.Image, error) {
	if img.AgentVersion == s.deps.Agent.Version || s.deps.Agent.Path == "" {
		return img, nil
	}
	b, err := s.builder()
	if err != nil {
		return store.Image{}, err
	}
	dst := s.imagePath(img.ID, s.deps.Agent.Version)
	size, err := b.Reinject(ctx, img.Path, dst, s.injectFiles())
	if err != nil {
		return store.Image{}, fmt.Errorf("image %s: update its guest agent: %w", img.ID, err)
	}
	old := img.Path
	img.Path, img.SizeBytes, img.AgentVersion = dst, size, s.deps.Agent.Version
	if users, err := s.usedBy(ctx, img.ID); err == nil && len(users) == 0 && old != dst {
		if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove image file with the old agent", "path", old, "err", err)
		}
	}
	s.log.Info("guest agent updated in image", "image", img.ID, "agent", img.AgentVersion)
	return img, nil
}

// Get returns one image.
func (s *Service) Get(ctx context.Context, ref string) (store.Image, []string, error) {
	img, err := s.deps.Store.GetImage(ctx, ref)
	if err != nil {
		return store.Image{}, nil, err
	}
	users, err := s.usedBy(ctx, img.ID)
	return img, users, err
}

// List returns every image with the VMs made from it.
func (s *Service) List(ctx context.Context) ([]store.Image, map[string][]string, error) {
	imgs, err := s.deps.Store.ListImages(ctx)
	if err != nil {
		return nil, nil, err
	}
	vms, err := s.deps.Store.ListVMs(ctx)
	if err != nil {
		return nil, nil, err
	}
	users := map[string][]string{}
	for _, vm := range vms {
		users[vm.ImageID] = append(users[vm.ImageID], vm.Name)
	}
	return imgs, users, nil
}

func (s *Service) usedBy(ctx context.Context, id string) ([]string, error) {
	vms, err := s.deps.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, vm := range vms {
		if vm.ImageID == id {
			names = append(names, vm.Name)
		}
	}
	return names, nil
}

// ErrInUse means VMs are made from the image; the error names them.
var ErrInUse = store.ErrInUse

// RemoveResult says what Remove did.
type RemoveResult struct {
	ID       string
	Removed  bool
	Untagged []string
	KeptFor  []string
}

// Remove deletes an image's record and file. An image VMs are made from is
// refused (naming them) unless force, which removes its tags and keeps the file
// until the last of those VMs is removed.
func (s *Service) Remove(ctx context.Context, ref string, force bool) (RemoveResult, error) {
	img, err := s.deps.Store.GetImage(ctx, ref)
	if err != nil {
		return RemoveResult{}, err
	}
	unlock := s.lock(img.ID)
	defer unlock()
	users, err := s.usedBy(ctx, img.ID)
	if err != nil {
		return RemoveResult{}, err
	}
	res := RemoveResult{ID: img.ID}
	if len(users) > 0 {
		if !force {
			return RemoveResult{}, fmt.Errorf("image %s is used by VM(s) %s: remove them first (banger vm rm), or untag it with --force: %w",
				displayName(img), strings.Join(users, ", "), ErrInUse)
		}
		for _, t := range img.Tags {
			if err := s.deps.Store.UntagImage(ctx, t); err != nil {
				return res, err
			}
			res.Untagged = append(res.Untagged, t)
		}
		res.KeptFor = users
		return res, nil
	}
	if err := s.deps.Store.DeleteImage(ctx, img.ID); err != nil {
		return RemoveResult{}, err
	}
	res.Removed, res.Untagged = true, img.Tags
	if err := os.Remove(img.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("image record removed but its file was not", "path", img.Path, "err", err)
	}
	return res, nil
}

func displayName(img store.Image) string {
	if len(img.Tags) > 0 {
		return fmt.Sprintf("%s (%s)", img.Tags[0], short(img.ID))
	}
	return short(img.ID)
}

func short(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	return h[:min(12, len(h))]
}
