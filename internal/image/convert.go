package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"banger/internal/image/ext4"
	"banger/internal/image/layers"
	"banger/internal/image/oci"
	"banger/internal/image/progress"
)

// conversion is one image being built: a staging area, the tree applied so
// far, and the progress sink. close removes everything it made except the
// finished image.
type conversion struct {
	b       *Builder
	staging string
	tree    *layers.Tree
	emit    progress.Func
}

func (b *Builder) startConversion(dst string, emit progress.Func) (*conversion, error) {
	staging, err := b.stagingDir(dst)
	if err != nil {
		return nil, err
	}
	tree, err := layers.NewTree(staging, b.cfg.Limits)
	if err != nil {
		os.RemoveAll(staging)
		return nil, err
	}
	return &conversion{b: b, staging: staging, tree: tree, emit: emit}, nil
}

func (c *conversion) close() {
	if err := c.tree.Close(); err != nil {
		c.b.cfg.Logger.Debug("close staging area", "dir", c.staging, "err", err)
	}
	if err := os.RemoveAll(c.staging); err != nil {
		c.b.cfg.Logger.Warn("remove staging area", "dir", c.staging, "err", err)
	}
}

// applyLayer applies one uncompressed layer stream and, when wantDiffID is
// set, checks the stream's digest against it. The stream is read to its end
// even past the tar archive, since registries' digest checks run at EOF.
func (c *conversion) applyLayer(ctx context.Context, rc io.ReadCloser, wantDiffID, label string) error {
	start := time.Now()
	h := sha256.New()
	tee := io.TeeReader(rc, h)
	err := c.tree.ApplyLayer(ctx, tee)
	if err == nil {
		_, err = io.Copy(io.Discard, tee)
	}
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return classifyLayerErr(err, label)
	}
	if got := digestOf(h); wantDiffID != "" && got != wantDiffID {
		return fmt.Errorf("%s: %w: its content has digest %s, the image says %s: pull it again, or rebuild the image",
			label, ErrCorruptLayer, got, wantDiffID)
	}
	c.b.cfg.Logger.Debug("layer applied", "layer", label, "took", time.Since(start))
	return nil
}

// classifyLayerErr tells apart, for one layer, a refused entry, a limit, a
// full disk, a lost connection and bad bytes.
func classifyLayerErr(err error, label string) error {
	var ne net.Error
	var te *transport.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", label, err)
	case errors.Is(err, layers.ErrUnsafe), errors.Is(err, layers.ErrTooLarge):
		return fmt.Errorf("%s: %w", label, err)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%s: %w: free some disk space and retry (%v)", label, ErrNoSpace, err)
	case errors.As(err, &ne), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: %w: the connection failed while reading it (%v)", label, ErrUnreachable, err)
	case errors.As(err, &te):
		return oci.Classify(err, label)
	}
	return fmt.Errorf("%s: %w: %w", label, ErrCorruptLayer, err)
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// inject applies files as a last layer, through the same path checks as
// any archive.
func (c *conversion) inject(ctx context.Context, files []InjectFile) error {
	if len(files) == 0 {
		return nil
	}
	for _, f := range files {
		if err := f.Validate(); err != nil {
			return err
		}
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeInjectTar(pw, files))
	}()
	err := c.tree.ApplyLayer(ctx, pr)
	if err == nil {
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(errors.New("inject layer abandoned")) // unblocks the writer after a failure
	<-done
	if err != nil {
		return fmt.Errorf("inject files: %w", err)
	}
	return nil
}

// writeInjectTar renders files as a tar stream.
func writeInjectTar(w io.Writer, files []InjectFile) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	for _, f := range files {
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(f.Path, "/"),
			Mode:    int64(ext4.UnixMode(f.Mode)),
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: now,
			Format:  tar.FormatPAX,
		}
		var body io.Reader
		switch {
		case f.Mode&os.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.Target
		case f.Mode&os.ModeDir != 0:
			hdr.Typeflag = tar.TypeDir
		case f.Source != "":
			src, err := os.Open(f.Source)
			if err != nil {
				return fmt.Errorf("inject %s: %w", f.Path, err)
			}
			defer src.Close()
			fi, err := src.Stat()
			if err != nil {
				return fmt.Errorf("inject %s: %w", f.Path, err)
			}
			hdr.Typeflag, hdr.Size, body = tar.TypeReg, fi.Size(), src
		default:
			hdr.Typeflag, hdr.Size, body = tar.TypeReg, int64(len(f.Data)), strings.NewReader(string(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("inject %s: %w", f.Path, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return fmt.Errorf("inject %s: %w", f.Path, err)
			}
		}
	}
	return tw.Close()
}

// build writes the ext4 image to dst, reporting convert progress.
func (c *conversion) build(ctx context.Context, dst string) (ext4.Result, error) {
	res, err := ext4.Build(ctx, c.tree, dst, ext4.BuildOptions{
		Tools:   c.b.cfg.Tools,
		Size:    c.b.cfg.Size,
		Scratch: c.staging,
		Logger:  c.b.cfg.Logger,
		Progress: func(cur, total int64) {
			c.emit(Event{Phase: progress.PhaseConvert, Current: cur, Total: total})
		},
	})
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		err = fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return res, err
}

// byteProgress emits download events for one item, at most every 1% (or
// 256 KiB when the total is unknown), plus the first and the last.
type byteProgress struct {
	emit    progress.Func
	layer   string
	message string
	total   int64
	cur     int64
	last    int64
}

func (p *byteProgress) start() {
	p.emit(Event{Phase: progress.PhaseDownload, Layer: p.layer, Message: p.message, Total: p.total})
}

func (p *byteProgress) add(n int64) {
	p.cur += n
	step := max(p.total/100, 256<<10)
	if p.cur-p.last >= step && (p.total == 0 || p.cur < p.total) {
		p.last = p.cur
		p.emit(Event{Phase: progress.PhaseDownload, Layer: p.layer, Message: p.message, Current: p.cur, Total: p.total})
	}
}

func (p *byteProgress) finish() {
	total := p.total
	if total == 0 || p.cur > total {
		total = p.cur
	}
	p.emit(Event{Phase: progress.PhaseDownload, Layer: p.layer, Message: p.message, Current: total, Total: total})
}
