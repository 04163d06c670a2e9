package image

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/image/ext4"
	"banger/internal/image/layers"
	"banger/internal/image/oci"
	"banger/internal/image/progress"
)

// ResolveImport says what `image import PATH` would make of path, with the
// id it would get, by reading it (tarballs and ext4 files are hashed, a
// directory is walked). path must be absolute.
func (b *Builder) ResolveImport(ctx context.Context, path string) (Resolved, error) {
	kind, err := importKind(path)
	if err != nil {
		return Resolved{}, err
	}
	h := sha256.New()
	switch kind {
	case KindRootfsDir:
		err = writeDirTar(ctx, path, h)
	default:
		err = hashFile(ctx, path, h)
	}
	if err != nil {
		return Resolved{}, fmt.Errorf("import %s: %w", path, err)
	}
	return Resolved{ID: digestOf(h), Kind: kind, Source: path}, nil
}

// Import converts a root filesystem into an ext4 image at dst: a tarball
// (plain, gzip or zstd), a directory (its owners, modes, links, devices and
// xattrs as this process can read them), or an ext4 file (checked with
// e2fsck, then copied). opts.Inject is applied in each case. On failure
// nothing is left at dst or beside it.
func (b *Builder) Import(ctx context.Context, path, dst string, opts Options) (Result, error) {
	emit := serialize(opts.Progress)
	emit(Event{Phase: progress.PhaseResolve, Message: path})
	kind, err := importKind(path)
	if err != nil {
		return Result{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Result{}, fmt.Errorf("import %s: %w", path, err)
	}
	res := Result{Resolved: Resolved{Kind: kind, Source: path}, Path: dst}
	h := sha256.New()
	prog := &byteProgress{emit: emit, message: path}

	if kind == KindExt4 {
		prog.total = fi.Size()
		prog.start()
		if err := hashFile(ctx, path, io.MultiWriter(h, progressWriter(prog.add))); err != nil {
			return Result{}, fmt.Errorf("import %s: %w", path, err)
		}
		prog.finish()
		scratch, err := b.stagingDir(dst)
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(scratch)
		emit(Event{Phase: progress.PhaseConvert, Total: fi.Size()})
		size, err := ext4.CopyAndInject(ctx, b.cfg.Tools, path, dst, scratch, opts.Inject)
		if err != nil {
			return Result{}, fmt.Errorf("import %s: %w", path, wrapNotImage(err))
		}
		emit(Event{Phase: progress.PhaseConvert, Current: fi.Size(), Total: fi.Size()})
		res.ID, res.SizeBytes = digestOf(h), size
		emit(Event{Phase: progress.PhaseDone, Message: res.ID, Current: size, Total: size})
		return res, nil
	}

	conv, err := b.startConversion(dst, emit)
	if err != nil {
		return Result{}, err
	}
	defer conv.close()
	label := "import " + path
	switch kind {
	case KindRootfsDir:
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			pw.CloseWithError(writeDirTar(ctx, path, io.MultiWriter(pw, h)))
		}()
		prog.start()
		err = conv.tree.ApplyLayer(ctx, &countReader{r: pr, count: prog.add})
		if err == nil {
			_, err = io.Copy(io.Discard, pr)
		}
		pr.CloseWithError(errors.New("import abandoned"))
		<-done
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", label, err)
		}
	default:
		prog.total = fi.Size()
		prog.start()
		if err := b.applyTarball(ctx, conv, path, io.MultiWriter(h, progressWriter(prog.add))); err != nil {
			return Result{}, err
		}
	}
	prog.finish()
	if conv.tree.Entries() == 0 {
		return Result{}, fmt.Errorf("%s: %w: it holds no files", path, ErrNotImage)
	}
	if err := conv.inject(ctx, opts.Inject); err != nil {
		return Result{}, fmt.Errorf("%s: %w", label, err)
	}
	built, err := conv.build(ctx, dst)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", label, err)
	}
	res.ID, res.SizeBytes = digestOf(h), built.SizeBytes
	emit(Event{Phase: progress.PhaseDone, Message: res.ID, Current: res.SizeBytes, Total: res.SizeBytes})
	return res, nil
}

// applyTarball applies a rootfs tarball, plain or compressed, as one layer,
// writing every byte of the file (not only those the decompressor needed)
// to raw, for its digest.
func (b *Builder) applyTarball(ctx context.Context, conv *conversion, path string, raw io.Writer) (err error) {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	defer f.Close()
	src := io.TeeReader(&ctxReader{ctx: ctx, r: f}, raw)
	notImage := func() error {
		return fmt.Errorf("%s: %w: not a tar archive (plain, gzip or zstd), a directory or an ext4 file", path, ErrNotImage)
	}
	rc, err := oci.Decompress(func() (io.ReadCloser, error) { return io.NopCloser(src), nil })
	if err != nil {
		return notImage()
	}
	defer rc.Close()
	err = conv.tree.ApplyLayer(ctx, rc)
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, src)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, layers.ErrNotTar), conv.tree.Entries() == 0 && !errors.Is(err, context.Canceled):
		return notImage()
	}
	return classifyLayerErr(err, "import "+path)
}

// importKind tells what path holds, and refuses inputs meant for Pull with
// a hint.
func importKind(path string) (Kind, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("import %q: the path must be absolute: %w", path, ErrBadReference)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("import: %w", err)
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(path, "index.json")); err == nil {
			if _, err := os.Stat(filepath.Join(path, "oci-layout")); err == nil {
				return "", fmt.Errorf("%s is an OCI image layout, not a root filesystem: use `banger image pull oci:%s`: %w", path, path, ErrNotImage)
			}
		}
		return KindRootfsDir, nil
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is a %s: %w: import takes a tar archive, a directory or an ext4 file", path, fi.Mode().Type(), ErrNotImage)
	}
	if ok, err := ext4.IsExt4(path); err != nil {
		return "", fmt.Errorf("import %s: %w", path, err)
	} else if ok {
		return KindExt4, nil
	}
	if isArchive, err := looksLikeImageArchive(path); err != nil {
		return "", fmt.Errorf("import %s: %w", path, err)
	} else if isArchive {
		return "", fmt.Errorf("%s is a `docker save` or OCI archive, not a root filesystem: use `banger image pull docker-archive:%s`: %w", path, path, ErrNotImage)
	}
	return KindRootfsTar, nil
}

// archiveName matches the entries that start a `docker save` or OCI image
// archive rather than a root filesystem.
var archiveName = regexp.MustCompile(`^(manifest\.json|repositories|oci-layout|index\.json|blobs/sha256/.*|[0-9a-f]{64}(/.*|\.json))$`)

// looksLikeImageArchive reads the first entries of a (possibly compressed)
// tar and reports whether they are an image archive's.
func looksLikeImageArchive(path string) (bool, error) {
	rc, err := oci.Decompress(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		return false, nil // not something we can read: Import says so
	}
	defer rc.Close()
	tr := tar.NewReader(bufio.NewReader(rc))
	for i := 0; i < 3; i++ {
		hdr, err := tr.Next()
		if err != nil {
			return false, nil
		}
		if archiveName.MatchString(strings.TrimPrefix(hdr.Name, "./")) {
			return true, nil
		}
	}
	return false, nil
}

// wrapNotImage makes ext4 validation failures of an import ErrNotImage too.
func wrapNotImage(err error) error {
	if errors.Is(err, ext4.ErrNotExt4) || errors.Is(err, ext4.ErrCorrupt) {
		return fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	return err
}

func hashFile(ctx context.Context, path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, &ctxReader{ctx: ctx, r: f})
	return err
}

type countReader struct {
	r     io.Reader
	count func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.count(int64(n))
	}
	return n, err
}

type progressWriter func(int64)

func (p progressWriter) Write(b []byte) (int, error) {
	p(int64(len(b)))
	return len(b), nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
