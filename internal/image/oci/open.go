package oci

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Options configure how images are found. The zero value is ready to use.
type Options struct {
	// Platform is the platform to pick from multi-arch indexes; default
	// linux on this process's architecture.
	Platform v1.Platform
	// Keychain supplies registry credentials; default authn.DefaultKeychain
	// (~/.docker/config.json and its credential helpers).
	Keychain authn.Keychain
	// Transport for registry requests; default remote.DefaultTransport.
	Transport http.RoundTripper
	// Retries is how many times a failing registry request is tried again
	// (go-containerregistry backs off between tries); 0 means its default,
	// a negative value none.
	Retries int
}

// defaultBackoff is the first wait between retries, as go-containerregistry's.
const defaultBackoff = time.Second

// HostPlatform is linux on this process's architecture.
func HostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

func (o Options) platform() v1.Platform {
	if o.Platform.OS == "" {
		return HostPlatform()
	}
	return o.Platform
}

func (o Options) remote(ctx context.Context) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	tr := o.Transport
	if tr == nil {
		tr = remote.DefaultTransport
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(guardTransport{next: tr}),
		remote.WithUserAgent("banger"),
		remote.WithPlatform(o.platform()),
	}
	if o.Retries != 0 {
		b := remote.Backoff{Duration: defaultBackoff, Factor: 3, Jitter: 0.1, Steps: max(o.Retries, 0) + 1}
		opts = append(opts, remote.WithRetryBackoff(b))
	}
	return opts
}

// Resolved is what a reference points at, found from manifests alone.
type Resolved struct {
	// ID is the image's identity: the digest of its config, which names its
	// layers' uncompressed digests. The same image reached through a
	// registry, a layout or an archive has the same ID.
	ID     string
	Source Source
	// ManifestDigest is the digest of the image manifest (not of an index);
	// empty for archives, which hold no manifest of that kind.
	ManifestDigest string
	// Platform is the platform the index said the image is for; empty when
	// the reference named a single image (checked with CheckPlatform once
	// the config is read).
	Platform string
	// Name is a canonical name for tagging: the full registry reference
	// (index.docker.io/library/alpine:3.20), or the tag picked from a
	// layout or archive (empty if none).
	Name string
	// Names are further names the source gives the image: a `docker save`
	// archive's RepoTags when no tag was picked.
	Names []string
}

// Open resolves src to one image for the platform. It reads manifests (and,
// for an archive, its manifest.json and config) but no layers: this is the
// cheap step that decides whether an image is already converted. The image
// returned reads the rest lazily.
func Open(ctx context.Context, src Source, opts Options) (v1.Image, Resolved, error) {
	res := Resolved{Source: src}
	var img v1.Image
	var err error
	switch src.Kind {
	case KindRegistry:
		img, res.Platform, err = openRemote(ctx, src, opts)
		res.Name = src.Ref.Name()
	case KindLayout:
		img, res.Platform, err = openLayout(src, opts)
		res.Name = src.Tag
	case KindArchive:
		var repoTags []string
		img, repoTags, err = openArchive(src)
		res.Name = src.Tag
		if src.Tag == "" {
			res.Names = repoTags
		}
	default:
		err = fmt.Errorf("unknown image source kind %q", src.Kind)
	}
	if err != nil {
		return nil, Resolved{}, err
	}
	if src.Kind == KindArchive {
		// An archive's manifest is computed, by compressing every layer
		// stored uncompressed: use the config, which the archive holds.
		cfg, err := img.ConfigName()
		if err != nil {
			return nil, Resolved{}, fmt.Errorf("image %s: read config: %v: %w", src, err, ErrNotImage)
		}
		res.ID = cfg.String()
		return img, res, nil
	}
	// The config digest from the manifest: asking the image for its
	// ConfigName may download the config blob.
	m, err := img.Manifest()
	if err != nil {
		return nil, Resolved{}, Classify(err, fmt.Sprintf("image %s: read manifest", src))
	}
	cfg := m.Config.Digest
	md, err := img.Digest()
	if err != nil {
		return nil, Resolved{}, Classify(err, fmt.Sprintf("image %s: read manifest", src))
	}
	res.ID, res.ManifestDigest = cfg.String(), md.String()
	return img, res, nil
}

func openRemote(ctx context.Context, src Source, opts Options) (v1.Image, string, error) {
	what := fmt.Sprintf("image %s", src.Ref)
	desc, err := remote.Get(src.Ref, opts.remote(ctx)...)
	if err != nil {
		return nil, "", Classify(err, what)
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, "", Classify(err, what)
		}
		return fromIndex(idx, "", opts.platform(), what)
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, "", Classify(err, what)
		}
		return img, "", nil
	}
	return nil, "", fmt.Errorf("%s: media type %s is neither an image nor an index: %w", what, desc.MediaType, ErrNotImage)
}

func openLayout(src Source, opts Options) (v1.Image, string, error) {
	what := fmt.Sprintf("OCI layout %s", src.Path)
	if _, err := os.Stat(src.Path + "/index.json"); err != nil {
		return nil, "", fmt.Errorf("%s: no index.json (%v): %w", what, err, ErrNotImage)
	}
	idx, err := layout.ImageIndexFromPath(src.Path)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %v: %w", what, err, ErrNotImage)
	}
	return fromIndex(idx, src.Tag, opts.platform(), what)
}

// openArchive opens the image of a `docker save` archive: the one tagged src.Tag, or
// the only one, whose RepoTags it also returns (docker's names for it).
func openArchive(src Source) (v1.Image, []string, error) {
	what := fmt.Sprintf("docker archive %s", src.Path)
	var tag *name.Tag
	if src.Tag != "" {
		t, err := name.NewTag(src.Tag)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: tag %q: %v: %w", what, src.Tag, err, ErrBadReference)
		}
		tag = &t
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(src.Path) })
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not a `docker save` archive (%v): %w", what, err, ErrNotImage)
	}
	if tag == nil && len(m) > 1 {
		var tags []string
		for _, d := range m {
			tags = append(tags, d.RepoTags...)
		}
		return nil, nil, fmt.Errorf("%s holds %d images: name one, as docker-archive:%s:TAG (tags: %s): %w",
			what, len(m), src.Path, strings.Join(tags, ", "), ErrNotImage)
	}
	img, err := tarball.ImageFromPath(src.Path, tag)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v: %w", what, err, ErrNotImage)
	}
	var repoTags []string
	if len(m) == 1 {
		repoTags = m[0].RepoTags
	}
	return img, repoTags, nil
}

// refNameAnnotation tags an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// fromIndex picks one image out of an index: the one tagged tag, if given;
// the only one; or the one for the platform. Nested indexes are followed.
func fromIndex(idx v1.ImageIndex, tag string, want v1.Platform, what string) (v1.Image, string, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", Classify(err, what)
	}
	descs := im.Manifests
	if tag != "" {
		var tagged []v1.Descriptor
		var tags []string
		for _, d := range descs {
			if n := d.Annotations[refNameAnnotation]; n != "" {
				tags = append(tags, n)
				if n == tag || strings.HasSuffix(n, ":"+tag) {
					tagged = append(tagged, d)
				}
			}
		}
		if len(tagged) == 0 {
			return nil, "", fmt.Errorf("%s: no image tagged %q (tags: %s): %w", what, tag, strings.Join(tags, ", "), ErrNotFound)
		}
		descs = tagged
	}
	var d v1.Descriptor
	switch {
	case len(descs) == 0:
		return nil, "", fmt.Errorf("%s: the index lists no images: %w", what, ErrNotImage)
	case len(descs) == 1 && (descs[0].Platform == nil || descs[0].MediaType.IsIndex()):
		d = descs[0]
	case !anyPlatform(descs):
		var tags []string
		for _, d := range descs {
			if n := d.Annotations[refNameAnnotation]; n != "" {
				tags = append(tags, n)
			}
		}
		return nil, "", fmt.Errorf("%s holds %d images: name one with a tag (tags: %s): %w",
			what, len(descs), strings.Join(tags, ", "), ErrNotFound)
	default:
		if d, err = pickPlatform(descs, want, what); err != nil {
			return nil, "", err
		}
	}
	platform := ""
	if d.Platform != nil {
		platform = d.Platform.String()
	}
	switch {
	case d.MediaType.IsIndex():
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, "", Classify(err, what)
		}
		return fromIndex(child, "", want, what)
	case d.MediaType.IsImage():
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, "", Classify(err, what)
		}
		return img, platform, nil
	}
	return nil, "", fmt.Errorf("%s: %s is a %s, not an image: %w", what, d.Digest, d.MediaType, ErrNotImage)
}

func anyPlatform(descs []v1.Descriptor) bool {
	for _, d := range descs {
		if d.Platform != nil {
			return true
		}
	}
	return false
}

// pickPlatform chooses the descriptor for want, preferring an exact variant
// match. Attestation manifests ("unknown/unknown") never match.
func pickPlatform(descs []v1.Descriptor, want v1.Platform, what string) (v1.Descriptor, error) {
	var best *v1.Descriptor
	var have []string
	for i, d := range descs {
		p := d.Platform
		if p == nil {
			continue
		}
		if p.OS != "unknown" {
			have = append(have, p.String())
		}
		if p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		if want.Variant != "" && p.Variant != "" && p.Variant != want.Variant {
			continue
		}
		if best == nil || (want.Variant != "" && p.Variant == want.Variant) {
			best = &descs[i]
		}
	}
	if best == nil {
		sort.Strings(have)
		return v1.Descriptor{}, fmt.Errorf("%s has no %s image; it has: %s: %w",
			what, want.String(), strings.Join(have, ", "), ErrPlatform)
	}
	return *best, nil
}

// CheckPlatform reads the image's config and fails with ErrPlatform when it
// is for another OS or architecture. Needed for images not reached through
// an index, whose platform only the config tells.
func CheckPlatform(img v1.Image, want v1.Platform, what string) error {
	if want.OS == "" {
		want = HostPlatform()
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Classify(err, what+": read config")
	}
	if (cf.OS != "" && cf.OS != want.OS) || (cf.Architecture != "" && cf.Architecture != want.Architecture) {
		return fmt.Errorf("%s is for %s/%s; this host runs %s: %w", what, cf.OS, cf.Architecture, want.String(), ErrPlatform)
	}
	return nil
}
