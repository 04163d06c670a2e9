package image

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"banger/internal/image/oci"
	"banger/internal/image/progress"
)

// Resolve finds what an image reference names (see oci.ParseSource for the
// forms it takes) and returns its id, reading manifests only: no layer is
// downloaded. A caller that already has an image with this id need not
// Pull.
func (b *Builder) Resolve(ctx context.Context, ref string) (Resolved, error) {
	src, err := oci.ParseSource(ref)
	if err != nil {
		return Resolved{}, err
	}
	_, r, err := oci.Open(ctx, src, b.cfg.Registry)
	if err != nil {
		return Resolved{}, err
	}
	return resolvedFromOCI(r), nil
}

func resolvedFromOCI(r oci.Resolved) Resolved {
	return Resolved{
		ID:             r.ID,
		Kind:           Kind(r.Source.Kind),
		Source:         r.Source.String(),
		Name:           r.Name,
		Names:          r.Names,
		ManifestDigest: r.ManifestDigest,
		Platform:       r.Platform,
	}
}

// Pull fetches the image ref names for this host's platform and converts it
// into an ext4 image at dst, with opts.Inject applied over it. Layers are
// streamed one after the other straight into the staging area, each checked
// against its digest. On failure nothing is left at dst or beside it.
func (b *Builder) Pull(ctx context.Context, ref, dst string, opts Options) (Result, error) {
	emit := serialize(opts.Progress)
	emit(Event{Phase: progress.PhaseResolve, Message: ref})
	src, err := oci.ParseSource(ref)
	if err != nil {
		return Result{}, err
	}
	img, r, err := oci.Open(ctx, src, b.cfg.Registry)
	if err != nil {
		return Result{}, err
	}
	what := fmt.Sprintf("image %s", src)
	if r.Platform == "" {
		if err := oci.CheckPlatform(img, b.cfg.Registry.Platform, what); err != nil {
			return Result{}, err
		}
	}
	ls, err := img.Layers()
	if err != nil {
		return Result{}, fmt.Errorf("%s: list layers: %w", what, err)
	}
	// The config is the source of truth for layer content: its digest is
	// the image id, and it names each layer's uncompressed digest. (A
	// layer's own DiffID may be computed from its, possibly tampered, bytes.)
	cf, err := img.ConfigFile()
	if err != nil {
		return Result{}, oci.Classify(err, what+": read config")
	}
	if len(cf.RootFS.DiffIDs) != len(ls) {
		return Result{}, fmt.Errorf("%s: the config names %d layers, the manifest %d: %w",
			what, len(cf.RootFS.DiffIDs), len(ls), ErrNotImage)
	}
	b.cfg.Logger.Debug("pulling image", "ref", ref, "id", r.ID, "layers", len(ls))

	conv, err := b.startConversion(dst, emit)
	if err != nil {
		return Result{}, err
	}
	defer conv.close()
	for i, l := range ls {
		if err := b.pullLayer(ctx, conv, src.Kind, l, cf.RootFS.DiffIDs[i], fmt.Sprintf("%s: layer %d of %d", what, i+1, len(ls))); err != nil {
			return Result{}, err
		}
	}
	if err := conv.inject(ctx, opts.Inject); err != nil {
		return Result{}, fmt.Errorf("%s: %w", what, err)
	}
	built, err := conv.build(ctx, dst)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", what, err)
	}
	res := Result{Resolved: resolvedFromOCI(r), Path: dst, SizeBytes: built.SizeBytes, Layers: len(ls)}
	emit(Event{Phase: progress.PhaseDone, Message: res.ID, Current: res.SizeBytes, Total: res.SizeBytes})
	return res, nil
}

// pullLayer streams one layer into the conversion.
func (b *Builder) pullLayer(ctx context.Context, conv *conversion, kind oci.Kind, l v1.Layer, diffID v1.Hash, label string) error {
	var err error
	// The compressed digest names a layer in registries and layouts; an
	// archive's layers may be stored uncompressed, and computing their
	// compressed digest would compress them, so they go by diff id.
	name := diffID
	if kind != oci.KindArchive {
		if name, err = l.Digest(); err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
	}
	label += " (" + name.String() + ")"
	prog := &byteProgress{emit: conv.emit, layer: name.String()}
	rc, total, err := oci.OpenLayer(l, kind, prog.add)
	if err != nil {
		return classifyLayerErr(err, label)
	}
	prog.total = total
	prog.start()
	if err := conv.applyLayer(ctx, rc, diffID.String(), label); err != nil {
		return err
	}
	prog.finish()
	return nil
}
