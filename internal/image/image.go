package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"banger/internal/image/ext4"
	"banger/internal/image/layers"
	"banger/internal/image/oci"
	"banger/internal/image/progress"
)

// Errors a caller can test for with errors.Is, to pick an exit code or a
// hint. Every error also says, in its text, which image, layer or file it is
// about.
var (
	ErrBadReference = oci.ErrBadReference // the reference does not parse
	ErrNotFound     = oci.ErrNotFound     // no such image or tag
	ErrUnauthorized = oci.ErrUnauthorized // the registry refused our credentials
	ErrUnreachable  = oci.ErrUnreachable  // the registry cannot be reached
	ErrPlatform     = oci.ErrPlatform     // no image for this host's platform
	ErrNotImage     = oci.ErrNotImage     // the input is no image of any kind we take
	ErrUnsafe       = layers.ErrUnsafe    // an archive entry refused as unsafe
	ErrTooLarge     = layers.ErrTooLarge  // over a configured limit
	ErrNoSpace      = ext4.ErrNoSpace     // the host disk is full; also matches syscall.ENOSPC
	ErrImageFull    = ext4.ErrImageFull   // no room inside an existing image to inject into
	// ErrCorruptLayer marks a layer whose bytes do not decompress, do not
	// form a tar archive, or do not match the digest the image names.
	ErrCorruptLayer = errors.New("image: corrupt layer")
)

// Kind is where an image came from.
type Kind string

// Kinds of image source.
const (
	KindRegistry  = Kind(oci.KindRegistry)
	KindLayout    = Kind(oci.KindLayout)
	KindArchive   = Kind(oci.KindArchive)
	KindRootfsTar = Kind("rootfs-tar")
	KindRootfsDir = Kind("rootfs-dir")
	KindExt4      = Kind("ext4")
)

type (
	// InjectFile is a file put into every image (the guest agent, its init
	// wiring, a version stamp). See ext4.File.
	InjectFile = ext4.File
	// Event is a progress event; see package progress.
	Event = progress.Event
)

// Config configures a Builder. The zero value works: tools are found on the
// PATH and in the sbin directories, limits and sizes take their defaults,
// registries are reached with ~/.docker/config.json credentials.
type Config struct {
	Tools    ext4.Tools // zero: ext4.FindTools
	Limits   layers.Limits
	Size     ext4.SizePolicy
	Registry oci.Options
	// TempDir holds staging areas. Default: the destination's directory,
	// whose filesystem must then hold the staged content and the image at
	// once.
	TempDir string
	Logger  *slog.Logger // default: discard
}

// Builder pulls, imports and converts images. It holds configuration only;
// its methods may run concurrently (each conversion has its own staging
// area and temporary file).
type Builder struct {
	cfg Config // immutable after New
}

// New checks the configuration and the tools and returns a Builder.
func New(cfg Config) (*Builder, error) {
	if cfg.Tools == (ext4.Tools{}) {
		t, err := ext4.FindTools()
		if err != nil {
			return nil, err
		}
		cfg.Tools = t
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	cfg.Size = cfg.Size.WithDefaults()
	return &Builder{cfg: cfg}, nil
}

// Options are per-call settings of Pull and Import.
type Options struct {
	// Inject is applied over the image as a last layer.
	Inject []InjectFile
	// Progress receives events, one call at a time; may be nil.
	Progress progress.Func
}

// Resolved says what a reference or path names, without converting it.
type Resolved struct {
	ID     string `json:"id"` // sha256:<hex>, the image's identity (see the package doc)
	Kind   Kind   `json:"kind"`
	Source string `json:"source"` // the source, as parsed: a canonical reference or a path
	// Name is a canonical name to tag the image with: the full registry
	// reference, or the tag picked in a layout or archive; empty otherwise.
	Name string `json:"name,omitempty"`
	// Names are more names the source gives the image (a docker archive's RepoTags).
	Names          []string `json:"names,omitempty"`
	ManifestDigest string   `json:"manifest_digest,omitempty"` // registry and layout images
	Platform       string   `json:"platform,omitempty"`        // OCI images reached through an index
}

// Result describes a converted image. Path is the ext4 file, SizeBytes its
// size: together with ID they are what the store records.
type Result struct {
	Resolved
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	Layers    int    `json:"layers,omitempty"`
}

// ReadFile returns a regular file from an image (at most limit bytes), for
// example an agent version stamp written by Inject.
func (b *Builder) ReadFile(ctx context.Context, image, path string, limit int64) ([]byte, error) {
	return ext4.ReadFile(ctx, b.cfg.Tools, image, path, limit)
}

// Reinject writes a new image at dst: src with files put in (replacing what
// is at their paths), checked, renamed into place. src is never modified, so
// VMs running on it are safe; dst may be src (the old file is then replaced
// atomically, and VMs holding it open keep reading the old one). It returns
// the size of the new image.
func (b *Builder) Reinject(ctx context.Context, src, dst string, files []InjectFile) (int64, error) {
	scratch, err := b.stagingDir(dst)
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(scratch)
	return ext4.CopyAndInject(ctx, b.cfg.Tools, src, dst, scratch, files)
}

// stagingDir makes a private directory for one conversion.
func (b *Builder) stagingDir(dst string) (string, error) {
	parent := b.cfg.TempDir
	if parent == "" {
		parent = filepath.Dir(dst)
	}
	d, err := os.MkdirTemp(parent, ".banger-staging-")
	if err != nil {
		return "", fmt.Errorf("staging area in %s: %w", parent, err)
	}
	return d, nil
}

// serialize makes fn safe to call from several goroutines, one at a time,
// as progress.Func promises.
func serialize(fn progress.Func) progress.Func {
	if fn == nil {
		return func(Event) {}
	}
	var mu sync.Mutex
	return func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		fn(e)
	}
}
