package oci

import (
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OpenLayer returns layer l's uncompressed tar stream. count is called with
// the number of bytes read from the source each time some are, and total is
// what count will add up to (0 if unknown), for progress.
//
// Registry and layout layers are read compressed, as stored, and
// decompressed here (gzip, zstd or none, by their first bytes). Registry
// reads are checked against the layer digest by go-containerregistry when
// the stream ends; callers must read to EOF. Archive layers may be stored
// uncompressed, and asking go-containerregistry for their compressed form
// would compress them, so those are read uncompressed, total unknown.
func OpenLayer(l v1.Layer, kind Kind, count func(n int64)) (rc io.ReadCloser, total int64, err error) {
	if kind == KindArchive {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, 0, err
		}
		return &countingReader{rc: rc, count: count}, 0, nil
	}
	size, err := l.Size()
	if err != nil {
		return nil, 0, err
	}
	ul, err := partial.CompressedToLayer(&countingLayer{Layer: l, count: count})
	if err != nil {
		return nil, 0, err
	}
	rc, err = ul.Uncompressed()
	if err != nil {
		return nil, 0, err
	}
	return rc, size, nil
}

// Decompress returns the uncompressed content of what open returns: gzip,
// zstd or plain, told apart by the first bytes. For rootfs tarball imports.
func Decompress(open func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	ul, err := partial.CompressedToLayer(&rawBlob{open: open})
	if err != nil {
		return nil, err
	}
	return ul.Uncompressed()
}

// countingLayer is a partial.CompressedLayer whose Compressed stream counts
// the bytes read.
type countingLayer struct {
	v1.Layer
	count func(int64)
}

func (c *countingLayer) Compressed() (io.ReadCloser, error) {
	rc, err := c.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &countingReader{rc: rc, count: c.count}, nil
}

type countingReader struct {
	rc    io.ReadCloser
	count func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if n > 0 && c.count != nil {
		c.count(int64(n))
	}
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }

// rawBlob adapts a stream opener to partial.CompressedLayer, to reuse
// go-containerregistry's compression sniffing. Only Compressed is used.
type rawBlob struct {
	open func() (io.ReadCloser, error)
}

func (r *rawBlob) Compressed() (io.ReadCloser, error) { return r.open() }
func (r *rawBlob) Digest() (v1.Hash, error) {
	return v1.Hash{}, fmt.Errorf("oci: digest of a raw stream is not known")
}
func (r *rawBlob) Size() (int64, error) {
	return 0, fmt.Errorf("oci: size of a raw stream is not known")
}
func (r *rawBlob) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
